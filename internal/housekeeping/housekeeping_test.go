package housekeeping_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/gitssh-dev/gitssh/internal/housekeeping"
)

// repo is a bare repository and a work tree that pushes into it with the real git, each
// push of a few objects stored loose as a push through gitssh would be.
type repo struct {
	t          testing.TB
	bare, work string
	commits    int
}

// newRepo makes a repository whose pushes are stored as gitssh's receive-pack stores them
// (receive.unpackLimit=1: every push a pack; no git gc --auto after pushes), or, with
// loose, as git does by default and gitssh did before housekeeping: pushes of fewer than
// 100 objects as loose objects.
func newRepo(t testing.TB, loose bool) *repo {
	t.Helper()
	dir := t.TempDir()
	r := &repo{t: t, bare: filepath.Join(dir, "r.git"), work: filepath.Join(dir, "work")}
	r.git("", "init", "--quiet", "--bare", "--initial-branch=main", r.bare)
	r.git(r.bare, "config", "receive.autogc", "false")
	if !loose {
		r.git(r.bare, "config", "receive.unpackLimit", "1")
	}
	r.git("", "init", "--quiet", "--initial-branch=main", r.work)
	return r
}

func (r *repo) git(dir string, args ...string) string {
	r.t.Helper()
	out, err := gitIn(dir, args...)
	if err != nil {
		r.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(out)
}

func gitIn(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.com",
		"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.com")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// commit makes one commit touching a few files of 20.
func (r *repo) commit() {
	r.t.Helper()
	r.commits++
	for i := range 3 {
		name := filepath.Join(r.work, fmt.Sprintf("file%02d.txt", (r.commits*7+i)%20))
		if err := os.WriteFile(name, fmt.Appendf(nil, "commit %d line %d\n", r.commits, i), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
	r.git(r.work, "add", "-A")
	r.git(r.work, "commit", "--quiet", "-m", fmt.Sprintf("commit %d", r.commits))
}

func (r *repo) push() (string, error) {
	return gitIn(r.work, "push", "--quiet", r.bare, "HEAD:refs/heads/main")
}

func (r *repo) facts() housekeeping.Facts {
	r.t.Helper()
	f, err := housekeeping.Measure(r.bare)
	if err != nil {
		r.t.Fatal(err)
	}
	return f
}

// fsck fails the test unless git fsck finds the repository whole.
func (r *repo) fsck() {
	r.t.Helper()
	r.git(r.bare, "fsck", "--strict", "--no-progress")
}

// Many small pushes leave many loose objects or many small packs; a run, incremental or
// full, packs them into one or a few packs with a bitmap and a commit-graph, and the
// repository stays whole.
func TestRunPacksManySmallPushes(t *testing.T) {
	for _, tc := range []struct {
		loose, full bool
	}{{true, false}, {true, true}, {false, false}, {false, true}} {
		t.Run(fmt.Sprintf("loose=%v,full=%v", tc.loose, tc.full), func(t *testing.T) {
			g := NewWithT(t)
			full := tc.full
			r := newRepo(t, tc.loose)
			for range 40 {
				r.commit()
				out, err := r.push()
				g.Expect(err).NotTo(HaveOccurred(), out)
			}
			before := r.facts()
			if tc.loose {
				g.Expect(before.LooseObjects).To(BeNumerically(">=", 40*4), "each push of <100 objects is stored loose")
				g.Expect(before.Packs).To(BeZero())
			} else {
				g.Expect(before.LooseObjects).To(BeZero())
				g.Expect(before.Packs).To(Equal(40), "each push is a pack")
			}

			g.Expect(housekeeping.Run(context.Background(), r.bare, housekeeping.Options{Full: full})).To(Succeed())

			after := r.facts()
			g.Expect(after.LooseObjects).To(BeZero())
			g.Expect(after.Packs).To(BeNumerically("<=", 2))
			g.Expect(after.Packs).To(BeNumerically(">=", 1))
			g.Expect(after.Bitmap).To(BeTrue())
			g.Expect(after.CommitGraph).To(BeTrue())
			r.fsck()
			g.Expect(r.git(r.bare, "rev-list", "--count", "main")).To(Equal("40"))

			// A second run on a packed repository changes nothing that matters.
			r.commit()
			_, err := r.push()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(housekeeping.Run(context.Background(), r.bare, housekeeping.Options{Full: full})).To(Succeed())
			g.Expect(r.facts().Packs).To(BeNumerically("<=", 2))
			r.fsck()
		})
	}
}

// An empty repository, as gitssh creates it, is not an error.
func TestRunOnEmptyRepository(t *testing.T) {
	g := NewWithT(t)
	r := newRepo(t, false)
	g.Expect(housekeeping.Run(context.Background(), r.bare, housekeeping.Options{Full: true})).To(Succeed())
	g.Expect(housekeeping.Run(context.Background(), r.bare, housekeeping.Options{})).To(Succeed())
}

// Pushes that run during housekeeping all succeed, and afterwards git fsck finds the
// repository whole with the last pushed commit on main.
func TestPushesDuringRuns(t *testing.T) {
	for _, full := range []bool{false, true} {
		t.Run(fmt.Sprintf("full=%v", full), func(t *testing.T) {
			g := NewWithT(t)
			r := newRepo(t, false)
			for range 30 {
				r.commit()
				_, err := r.push()
				g.Expect(err).NotTo(HaveOccurred())
			}
			var pushErrs []error
			var wg sync.WaitGroup
			stop := make(chan struct{})
			wg.Go(func() {
				defer close(stop)
				for range 15 {
					r.commit()
					if out, err := r.push(); err != nil {
						pushErrs = append(pushErrs, fmt.Errorf("%w: %s", err, out))
					}
				}
			})
			runs := 0
			for running := true; running; {
				select {
				case <-stop:
					running = false
				default:
				}
				g.Expect(housekeeping.Run(context.Background(), r.bare, housekeeping.Options{Full: full})).To(Succeed())
				runs++
			}
			wg.Wait()
			g.Expect(pushErrs).To(BeEmpty())
			g.Expect(runs).To(BeNumerically(">=", 2), "the pushes raced at least one run")
			r.fsck()
			g.Expect(r.git(r.bare, "rev-parse", "main")).To(Equal(r.git(r.work, "rev-parse", "HEAD")))
		})
	}
}

// Unreachable objects are deleted only once they are older than the grace period: a push
// at the same time may be about to reference a young one.
func TestPruneKeepsRecentUnreachableObjects(t *testing.T) {
	for _, full := range []bool{false, true} {
		t.Run(fmt.Sprintf("full=%v", full), func(t *testing.T) {
			g := NewWithT(t)
			r := newRepo(t, false)
			r.commit()
			_, err := r.push()
			g.Expect(err).NotTo(HaveOccurred())
			hashObject := func(content string) string {
				f := filepath.Join(t.TempDir(), "blob")
				g.Expect(os.WriteFile(f, []byte(content), 0o644)).To(Succeed())
				return r.git(r.bare, "hash-object", "-w", f)
			}
			old, recent := hashObject("unreachable for a month\n"), hashObject("unreachable for a minute\n")
			month := time.Now().Add(-30 * 24 * time.Hour)
			g.Expect(os.Chtimes(filepath.Join(r.bare, "objects", old[:2], old[2:]), month, month)).To(Succeed())

			g.Expect(housekeeping.Run(context.Background(), r.bare, housekeeping.Options{Full: full})).To(Succeed())

			_, err = gitIn(r.bare, "cat-file", "-e", old)
			g.Expect(err).To(HaveOccurred(), "the object unreachable for a month is gone")
			_, err = gitIn(r.bare, "cat-file", "-e", recent)
			g.Expect(err).NotTo(HaveOccurred(), "the young unreachable object is kept")
			r.fsck()
		})
	}
}

// A run on a corrupted repository fails with the step and git's own message.
func TestRunFailsOnCorruptRepository(t *testing.T) {
	g := NewWithT(t)
	r := newRepo(t, true) // a loose commit object is easy to corrupt
	r.commit()
	_, err := r.push()
	g.Expect(err).NotTo(HaveOccurred())
	head := r.git(r.bare, "rev-parse", "main")
	object := filepath.Join(r.bare, "objects", head[:2], head[2:])
	g.Expect(os.Chmod(object, 0o644)).To(Succeed())
	g.Expect(os.WriteFile(object, []byte("not a zlib stream"), 0o644)).To(Succeed())

	err = housekeeping.Run(context.Background(), r.bare, housekeeping.Options{})
	var stepErr *housekeeping.StepError
	g.Expect(errors.As(err, &stepErr)).To(BeTrue(), "got %v", err)
	g.Expect(stepErr.Step).NotTo(BeEmpty())
	g.Expect(err.Error()).To(ContainSubstring(head))
}

// Cancelling a run kills git at once and leaves the repository as it was.
func TestRunCancelled(t *testing.T) {
	g := NewWithT(t)
	r := newRepo(t, false)
	for range 5 {
		r.commit()
		_, err := r.push()
		g.Expect(err).NotTo(HaveOccurred())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := housekeeping.Run(ctx, r.bare, housekeeping.Options{})
	g.Expect(errors.Is(err, context.Canceled)).To(BeTrue(), "got %v", err)
	r.fsck()
}

// BenchmarkRun5000LooseObjects measures a run on a repository whose history (1,000
// commits touching 3 of 20 files each) is stored as 5,000 loose objects, as many small
// pushes left it before gitssh kept pushes as packs:
//
//	go test -run '^$' -bench Run5000 -benchtime 1x ./internal/housekeeping/
func BenchmarkRun5000LooseObjects(b *testing.B) {
	for _, full := range []bool{false, true} {
		b.Run(fmt.Sprintf("full=%v", full), func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				r := newRepo(b, true)
				r.git(r.bare, "config", "receive.unpackLimit", "1000000")
				for range 1000 {
					r.commit()
				}
				if out, err := r.push(); err != nil {
					b.Fatal(err, out)
				}
				if f := r.facts(); f.LooseObjects < 5000 || f.Packs != 0 {
					b.Fatalf("want 5,000 loose objects, got %+v", f)
				}
				b.StartTimer()
				if err := housekeeping.Run(context.Background(), r.bare, housekeeping.Options{Full: full}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				f := r.facts()
				b.ReportMetric(float64(f.Packs), "packs")
				b.ReportMetric(float64(f.LooseObjects), "loose")
			}
		})
	}
}
