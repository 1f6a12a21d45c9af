package sshserver

import (
	"os"
	"testing"

	"github.com/gitssh-dev/gitssh/internal/packhook"
)

// TestMain lets the test binary be git's pack-objects hook, as gitssh's
// binary is when no gitssh-pack-hook is installed beside it
// (packcache.Config.HookBinary's default).
func TestMain(m *testing.M) {
	if packhook.Is() {
		os.Exit(packhook.Run())
	}
	os.Exit(m.Run())
}
