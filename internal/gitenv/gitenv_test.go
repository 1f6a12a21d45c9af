package gitenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// git run with Env reads no config file, whatever gitssh's own environment names: no
// system file, no ~/.gitconfig, no $XDG_CONFIG_HOME/git/config, no GIT_CONFIG_PARAMETERS.
func TestEnvReadsNoConfigFile(t *testing.T) {
	home := t.TempDir()
	planted := []byte("[user]\n\tname = planted\n")
	system := filepath.Join(home, "system")
	for _, f := range []string{system, filepath.Join(home, ".gitconfig"), filepath.Join(home, ".config", "git", "config")} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, planted, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	t.Setenv("GIT_CONFIG_SYSTEM", system)
	t.Setenv("GIT_CONFIG_PARAMETERS", "'user.email'='planted@example.com'")
	configList := func(env []string) string {
		cmd := exec.Command("git", "config", "--list", "--show-origin")
		cmd.Dir, cmd.Env = t.TempDir(), env
		out, _ := cmd.CombinedOutput() // exit status 1 when there is nothing to list
		return string(out)
	}
	if out := configList(os.Environ()); !strings.Contains(out, "planted") {
		t.Fatalf("the planted config is not where git looks by default:\n%s", out)
	}
	if out := configList(Env()); strings.Contains(out, "planted") {
		t.Errorf("git read a planted config with Env():\n%s", out)
	}
}
