package sshserver

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

// A push of a few objects is stored as a pack, not as loose objects (receive.unpackLimit=1:
// housekeeping may remove an empty objects/XX/ directory under a push that writes loose
// objects), and receive-pack starts no git gc --auto (receive.autogc=false), even when the
// repository's own config asks for one after every push.
func TestPushesAreKeptAsPacks(t *testing.T) {
	e := newEnv(t, Config{})
	g := NewWithT(t)
	bare := filepath.Join(e.dir, "repos", "acme", "api.git")
	e.git(bare, "config", "gc.auto", "1")
	e.git(bare, "config", "gc.autoPackLimit", "2")
	e.git(bare, "config", "gc.autoDetach", "false")
	e.git(bare, "config", "receive.unpackLimit", "100")
	work := filepath.Join(e.dir, "work")
	e.git(e.dir, "init", "-q", "-b", "main", work)
	for i := range 3 {
		g.Expect(os.WriteFile(filepath.Join(work, "f"), fmt.Appendf(nil, "%d\n", i), 0o644)).To(Succeed())
		e.git(work, "add", "f")
		e.git(work, "commit", "-q", "-m", fmt.Sprint(i))
		out, err := e.gitAs("alice", work, "push", e.url("acme/api.git"), "main")
		g.Expect(err).NotTo(HaveOccurred(), out)
	}
	packs, err := filepath.Glob(filepath.Join(bare, "objects", "pack", "pack-*.pack"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(packs).To(HaveLen(3), "one pack per push, and no gc rolled them up")
	loose, err := filepath.Glob(filepath.Join(bare, "objects", "??", "*"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(loose).To(BeEmpty())
}

// pack.threads and pack.windowMemory reach git, as -c settings that upload-pack passes on
// to pack-objects.
func TestPackSettingsReachGit(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	args := filepath.Join(dir, "args")
	wrapper := filepath.Join(dir, "git")
	g.Expect(os.WriteFile(wrapper, []byte("#!/bin/sh\necho \"$@\" >>"+args+"\nexec git \"$@\"\n"), 0o755)).To(Succeed())
	e := newEnv(t, Config{GitBinary: wrapper, PackThreads: 3, PackWindowMemory: 64 << 20})
	out, err := e.gitAs("alice", e.dir, "ls-remote", e.url("acme/api.git"))
	g.Expect(err).NotTo(HaveOccurred(), out)
	data, err := os.ReadFile(args)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(strings.Fields(string(data))).To(ContainElements("pack.threads=3", "pack.windowMemory=67108864"))
}
