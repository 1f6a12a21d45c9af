package controllers_test

import (
	"os"
	"testing"

	"github.com/gitssh-dev/gitssh/internal/testenv"
)

// env is the one control plane of this package's tests; each test takes a fresh namespace.
var env *testenv.Environment

func TestMain(m *testing.M) {
	os.Exit(testenv.Run(m, &env))
}
