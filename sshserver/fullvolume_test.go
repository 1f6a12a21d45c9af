package sshserver

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	. "github.com/onsi/gomega"

	"github.com/gitssh-dev/gitssh/internal/authorizer"
)

// mountTmpfs mounts a tmpfs of the given size on a new directory and unmounts it when the
// test ends. Tests run as root here and in CI; elsewhere mounting is not permitted and the
// test is skipped.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("mounting a tmpfs is not permitted (%v): run as root to test a full volume", err)
		}
		t.Fatalf("mounting a tmpfs on %s: %v", dir, err)
	}
	// Registered after TempDir's own cleanup, so it runs first.
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

func freeBytes(g *WithT, dir string) int64 {
	var st syscall.Statfs_t
	g.Expect(syscall.Statfs(dir, &st)).To(Succeed())
	return int64(st.Bavail) * st.Bsize
}

// writeRandom writes n bytes that do not compress, so that they reach the volume as large
// as they are.
func writeRandom(g *WithT, path string, n int) {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	g.Expect(os.MkdirAll(filepath.Dir(path), 0o755)).To(Succeed())
	g.Expect(os.WriteFile(path, b, 0o644)).To(Succeed())
}

// A push that fills the volume fails, and leaves the repository as it was: git fsck passes,
// a clone gets the old refs, nothing of the failed push takes space, and the next push that
// fits is stored. gitssh keeps every push as a pack (receive.unpackLimit=1); a push of few
// objects and one of many are covered.
func TestFullVolumeNeverCorruptsTheRepository(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files int // of 6 MiB in all, on a 4 MiB volume
	}{
		{"few objects", 1},
		{"many objects", 150},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			volume := mountTmpfs(t, "4m")
			e := newEnv(t, Config{})
			bare := filepath.Join(volume, "acme", "full.git")
			e.git("", "init", "--bare", "-q", "-b", "main", bare)
			e.auth.SetProject(authorizer.ObjectRef{Namespace: "default", Name: "full"},
				authorizer.Project{Owner: "acme", Name: "full", RepositoryPath: bare,
					Members: map[string]authorizer.Role{"alice": authorizer.RoleWrite}})

			work := filepath.Join(e.dir, "work")
			e.git(e.dir, "init", "-q", "-b", "main", work)
			writeRandom(g, filepath.Join(work, "small"), 100<<10)
			e.git(work, "add", ".")
			e.git(work, "commit", "-q", "-m", "fits")
			out, err := e.gitAs("alice", work, "push", e.url("acme/full.git"), "main")
			g.Expect(err).NotTo(HaveOccurred(), out)
			stored := strings.TrimSpace(e.git(bare, "rev-parse", "main"))
			free := freeBytes(g, volume)

			for i := range tc.files {
				writeRandom(g, filepath.Join(work, "big", fmt.Sprint(i)), (6<<20)/tc.files)
			}
			e.git(work, "add", ".")
			e.git(work, "commit", "-q", "-m", "does not fit")
			out, err = e.gitAs("alice", work, "push", e.url("acme/full.git"), "main", "main:refs/heads/other")
			g.Expect(err).To(HaveOccurred(), "a 6 MiB push onto a 4 MiB volume must fail: %s", out)
			g.Expect(out).To(ContainSubstring("No space left on device"), "the client is told why")

			out, err = e.gitAs("", bare, "fsck", "--full", "--strict", "--no-dangling")
			g.Expect(err).NotTo(HaveOccurred(), "git fsck after ENOSPC: %s", out)
			g.Expect(strings.Fields(e.git(bare, "for-each-ref", "--format=%(refname) %(objectname)"))).
				To(Equal([]string{"refs/heads/main", stored}), "no ref moved or appeared")
			clone := filepath.Join(e.dir, "clone")
			out, err = e.gitAs("alice", e.dir, "clone", e.url("acme/full.git"), clone)
			g.Expect(err).NotTo(HaveOccurred(), out)
			g.Expect(strings.TrimSpace(e.git(clone, "rev-parse", "HEAD"))).To(Equal(stored))

			// git removed the push's quarantine directory: the space is free again.
			g.Expect(freeBytes(g, volume)).To(BeNumerically(">=", free-64<<10), "the failed push left data on the volume")
			e.git(work, "reset", "-q", "--hard", "HEAD~1")
			e.git(work, "commit", "-q", "--allow-empty", "-m", "fits again")
			out, err = e.gitAs("alice", work, "push", e.url("acme/full.git"), "main")
			g.Expect(err).NotTo(HaveOccurred(), "a push that fits after the failed one: %s", out)
			out, err = e.gitAs("", bare, "fsck", "--full", "--strict")
			g.Expect(err).NotTo(HaveOccurred(), out)
		})
	}
}

// At every amount of free space around what a push needs, the push either lands whole or
// leaves the repository as it was. Page by page, the volume fills up while git writes the
// objects, then while it writes the ref (the objects are stored, the ref does not move),
// then not at all; each time git fsck passes and main is the old or the new commit.
func TestPushAtEveryFreeSpaceBoundary(t *testing.T) {
	g := NewWithT(t)
	volume := mountTmpfs(t, "4m")
	e := newEnv(t, Config{})
	bare := filepath.Join(volume, "acme", "full.git")
	e.git("", "init", "--bare", "-q", "-b", "main", bare)
	e.auth.SetProject(authorizer.ObjectRef{Namespace: "default", Name: "full"},
		authorizer.Project{Owner: "acme", Name: "full", RepositoryPath: bare,
			Members: map[string]authorizer.Role{"alice": authorizer.RoleWrite}})
	work := filepath.Join(e.dir, "work")
	e.git(e.dir, "init", "-q", "-b", "main", work)
	e.git(work, "commit", "-q", "--allow-empty", "-m", "first")
	out, err := e.gitAs("alice", work, "push", e.url("acme/full.git"), "main")
	g.Expect(err).NotTo(HaveOccurred(), out)

	filler := filepath.Join(volume, "filler")
	const page = 4096 // tmpfs allocates whole pages
	outcomes := map[string]bool{}
	for free := range int64(12) {
		before := strings.TrimSpace(e.git(bare, "rev-parse", "main"))
		writeRandom(g, filepath.Join(work, "f"), 10<<10) // about 3 pages in a pack
		e.git(work, "add", ".")
		e.git(work, "commit", "-q", "-m", fmt.Sprint(free))
		pushed := strings.TrimSpace(e.git(work, "rev-parse", "HEAD"))

		g.Expect(os.RemoveAll(filler)).To(Succeed())
		g.Expect(os.WriteFile(filler, make([]byte, freeBytes(g, volume)-free*page), 0o644)).To(Succeed())
		out, err := e.gitAs("alice", work, "push", e.url("acme/full.git"), "main")
		after := strings.TrimSpace(e.git(bare, "rev-parse", "main"))
		switch {
		case err == nil:
			outcomes["stored"] = true
			g.Expect(after).To(Equal(pushed), "%d pages free: %s", free, out)
		case strings.Contains(out, "(unpacker error)"):
			outcomes["objects did not fit"] = true
			g.Expect(after).To(Equal(before), "%d pages free: %s", free, out)
		case strings.Contains(out, "(failed to update ref"): // git 2.39 says "ref)", 2.55 "refs)"
			outcomes["the ref did not fit"] = true
			g.Expect(after).To(Equal(before), "%d pages free: %s", free, out)
		default:
			t.Fatalf("%d pages free: the push failed for another reason: %v: %s", free, err, out)
		}
		if err != nil {
			e.git(work, "reset", "-q", "--hard", "HEAD~1")
		}
		out, err = e.gitAs("", bare, "fsck", "--full", "--strict", "--no-dangling")
		g.Expect(err).NotTo(HaveOccurred(), "git fsck with %d pages free: %s", free, out)
	}
	g.Expect(outcomes).To(HaveLen(3), "every way a push meets a full volume was tried")
}
