package packcache

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"
)

func TestNewDropsFilesOfAPreviousRun(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	for _, f := range []string{"0123abcd.pack", "tmp-42.pack", socketName} {
		g.Expect(os.WriteFile(filepath.Join(dir, f), []byte("PACK from before"), 0o600)).To(Succeed())
	}
	c, err := New(Config{Dir: dir, Command: func(context.Context, string, []string) *exec.Cmd { return nil }})
	g.Expect(err).NotTo(HaveOccurred())
	defer c.Close()
	left, _ := filepath.Glob(filepath.Join(dir, "*.pack"))
	g.Expect(left).To(BeEmpty())
}

func TestCacheable(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"pack-objects", "--revs", "--thin", "--stdout", "--progress", "--delta-base-offset"}, true},
		{[]string{"--shallow-file", "", "pack-objects", "--revs", "--thin", "--stdout", "--shallow", "--include-tag", "--filter=blob:none"}, true},
		{[]string{"--shallow-file", "/etc/passwd", "pack-objects", "--revs", "--stdout"}, false},
		{[]string{"pack-objects", "--revs", "--stdout", "--shallow-file", ""}, false},
		{[]string{"-c", "x=y", "pack-objects", "--revs", "--stdout"}, false},
		{[]string{"pack-objects", "--revs", "--stdout", "--uri-protocol=https"}, false},
		{[]string{"pack-objects", "--revs", "pack-base"}, false},
		{[]string{"rev-list", "--stdout"}, false},
		{nil, false},
	} {
		if got := cacheable(tc.args); got != tc.want {
			t.Errorf("cacheable(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

func TestNewRefusesAHookGitWouldHandToAShell(t *testing.T) {
	g := NewWithT(t)
	cmd := func(context.Context, string, []string) *exec.Cmd { return nil }
	for _, hook := range []string{"relative/gitssh", "/opt/git ssh", "/bin/gitssh;rm"} {
		_, err := New(Config{Dir: t.TempDir(), HookBinary: hook, Command: cmd})
		g.Expect(err).To(MatchError(ContainSubstring("absolute path without spaces or shell characters")), hook)
	}
}
