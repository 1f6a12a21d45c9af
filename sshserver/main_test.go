package sshserver

import (
	"os"
	"testing"

	"github.com/gitssh-dev/gitssh/internal/packcache"
)

// TestMain lets the test binary be git's pack-objects hook, as the gitssh
// binary is in production (packcache.Config.HookBinary defaults to the
// running executable).
func TestMain(m *testing.M) {
	if packcache.IsHook() {
		os.Exit(packcache.RunHook())
	}
	os.Exit(m.Run())
}
