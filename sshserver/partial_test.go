package sshserver

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

// historyStart is the committer time of fillHistory's first commit; each
// next one is a day later.
const historyStart = 1700000000

// fillHistory writes five commits on main straight into the bare repository
// acme/NAME, one a day: each changes small.txt (under 100 bytes) and adds
// big-N.bin (4 KiB), so that blob:limit=1k tells them apart.
func fillHistory(e *env, name string) string {
	bare := filepath.Join(e.dir, "repos", "acme", name+".git")
	var b strings.Builder
	for c := range 5 {
		msg := fmt.Sprintf("commit %d\n", c)
		fmt.Fprintf(&b, "commit refs/heads/main\ncommitter T <t@example.com> %d +0000\ndata %d\n%s", historyStart+c*86400, len(msg), msg)
		small := fmt.Sprintf("small file, version %d\n", c)
		fmt.Fprintf(&b, "M 100644 inline small.txt\ndata %d\n%s\n", len(small), small)
		big := strings.Repeat(fmt.Sprintf("big file %d ", c), 4096/11)
		fmt.Fprintf(&b, "M 100644 inline big-%d.bin\ndata %d\n%s\n", c, len(big), big)
	}
	cmd := exec.Command("git", "fast-import", "--quiet")
	cmd.Dir = bare
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		e.t.Fatalf("git fast-import: %v\n%s", err, out)
	}
	return bare
}

// localObjects counts a clone's objects by type, only those on its disk (in
// a partial clone, what the filter left out is not there), and gives the
// size of the largest blob.
func localObjects(e *env, dir string) (counts map[string]int, largestBlob int) {
	cmd := exec.Command("git", "cat-file", "--batch-all-objects", "--batch-check=%(objecttype) %(objectsize)")
	cmd.Dir = dir
	out, err := cmd.Output() // stderr has a warning about promisor remotes
	if err != nil {
		e.t.Fatalf("git cat-file in %s: %v", dir, err)
	}
	counts = map[string]int{}
	for l := range strings.Lines(string(out)) {
		typ, size, _ := strings.Cut(strings.TrimSpace(l), " ")
		counts[typ]++
		if n, _ := strconv.Atoi(size); typ == "blob" && n > largestBlob {
			largestBlob = n
		}
	}
	return counts, largestBlob
}

func TestPartialClone(t *testing.T) {
	e := newEnv(t, Config{})
	fillHistory(e, "api")
	for _, tc := range []struct {
		filter string
		check  func(g *WithT, clone string)
	}{
		{"blob:none", func(g *WithT, clone string) {
			objs, _ := localObjects(e, clone)
			g.Expect(objs["blob"]).To(BeZero(), "blob:none sends no blob")
			g.Expect(objs).To(HaveKeyWithValue("commit", 5))
		}},
		{"blob:limit=1k", func(g *WithT, clone string) {
			objs, largest := localObjects(e, clone)
			g.Expect(objs["blob"]).To(Equal(5), "the five versions of small.txt, no big-N.bin")
			g.Expect(largest).To(BeNumerically("<=", 1024))
		}},
		{"tree:0", func(g *WithT, clone string) {
			objs, _ := localObjects(e, clone)
			g.Expect(objs["tree"]).To(BeZero())
			g.Expect(objs["blob"]).To(BeZero())
			g.Expect(objs).To(HaveKeyWithValue("commit", 5))
		}},
		{"combine:blob:none+tree:0", func(g *WithT, clone string) {
			objs, _ := localObjects(e, clone)
			g.Expect(objs).To(Equal(map[string]int{"commit": 5}))
		}},
	} {
		t.Run(tc.filter, func(t *testing.T) {
			g := NewWithT(t)
			clone := filepath.Join(t.TempDir(), "clone")
			out, err := e.gitAs("bob", e.dir, "-c", "protocol.version=2", "clone", "-q", "--no-checkout", "--filter="+tc.filter, e.url("acme/api.git"), clone)
			g.Expect(err).NotTo(HaveOccurred(), out)
			g.Expect(out).NotTo(ContainSubstring("filtering not recognized"))
			g.Expect(strings.TrimSpace(e.git(clone, "config", "remote.origin.promisor"))).To(Equal("true"))
			tc.check(g, clone)

			// Checkout fetches what it needs from the promisor remote, over ssh.
			out, err = e.gitAs("bob", clone, "checkout", "-q", "main")
			g.Expect(err).NotTo(HaveOccurred(), out)
			g.Expect(e.git(clone, "show", "HEAD:small.txt")).To(Equal("small file, version 4\n"))
			g.Expect(filepath.Join(clone, "big-4.bin")).To(BeAnExistingFile())
			out, err = e.gitAs("bob", clone, "fsck", "--no-progress")
			g.Expect(err).NotTo(HaveOccurred(), out)
		})
	}
}

func TestRefusedFilters(t *testing.T) {
	e := newEnv(t, Config{})
	fillHistory(e, "api")
	for _, tc := range []struct{ filter, message string }{
		{"sparse:oid=main:small.txt", "filter 'sparse:oid' not supported"},
		{"tree:1", "tree filter allows max depth 0, but got 1"},
		{"object:type=blob", "filter 'object:type' not supported"},
		{"combine:blob:none+sparse:oid=main:small.txt", "filter 'sparse:oid' not supported"},
	} {
		t.Run(tc.filter, func(t *testing.T) {
			g := NewWithT(t)
			out, err := e.gitAs("bob", e.dir, "-c", "protocol.version=2", "clone", "-q", "--bare", "--filter="+tc.filter, e.url("acme/api.git"), filepath.Join(t.TempDir(), "clone"))
			g.Expect(err).To(HaveOccurred())
			g.Expect(out).To(ContainSubstring("remote error: " + tc.message))
		})
	}
}

func TestShallowClone(t *testing.T) {
	e := newEnv(t, Config{})
	fillHistory(e, "api")
	g := NewWithT(t)
	count := func(clone string) string { return strings.TrimSpace(e.git(clone, "rev-list", "--count", "HEAD")) }

	depth1 := filepath.Join(e.dir, "depth1")
	out, err := e.gitAs("bob", e.dir, "-c", "protocol.version=2", "clone", "-q", "--depth=1", e.url("acme/api.git"), depth1)
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(count(depth1)).To(Equal("1"))
	g.Expect(filepath.Join(depth1, ".git", "shallow")).To(BeAnExistingFile())
	objs, _ := localObjects(e, depth1)
	g.Expect(objs).To(Equal(map[string]int{"commit": 1, "tree": 1, "blob": 6}))

	// Deepen by two commits, then all the way.
	out, err = e.gitAs("bob", depth1, "-c", "protocol.version=2", "fetch", "-q", "--deepen=2")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(count(depth1)).To(Equal("3"))
	out, err = e.gitAs("bob", depth1, "-c", "protocol.version=2", "fetch", "-q", "--unshallow")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(count(depth1)).To(Equal("5"))
	g.Expect(filepath.Join(depth1, ".git", "shallow")).NotTo(BeAnExistingFile())

	// Commits of the last two days and a half: the last three.
	since := filepath.Join(e.dir, "since")
	out, err = e.gitAs("bob", e.dir, "-c", "protocol.version=2", "clone", "-q", fmt.Sprintf("--shallow-since=@%d", historyStart+2*86400-3600), e.url("acme/api.git"), since)
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(count(since)).To(Equal("3"))
	for _, clone := range []string{depth1, since} {
		out, err = e.gitAs("bob", clone, "fsck", "--no-progress")
		g.Expect(err).NotTo(HaveOccurred(), out)
	}
}
