// Package housekeeping keeps bare repositories fast to clone: it packs loose objects,
// repacks geometrically with a multi-pack bitmap, writes the commit-graph and prunes
// unreachable objects once they are older than a grace period. It knows git and the file
// system, not Kubernetes; the housekeeping controller decides when to run it.
//
// Every step is one that git itself runs while pushes and clones go on (git gc, git
// maintenance): git writes new packs, indexes and graphs beside the old ones and renames
// them into place, so a reader or a push never sees a half-made file. What could hurt a
// push is pruning an object it is about to reference, which the grace period prevents
// (see Options.PruneGrace), and two races found by TestPushesDuringRuns (see Plan).
package housekeeping

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gitssh-dev/gitssh/internal/gitenv"
)

// DefaultPruneGrace is git gc's own default (gc.pruneExpire "2.weeks.ago").
const DefaultPruneGrace = 14 * 24 * time.Hour

// Options configures a run. The zero value is usable.
type Options struct {
	// GitBinary is the git executable; "git" from PATH when empty.
	GitBinary string
	// Full repacks everything into one pack, and puts unreachable objects younger than
	// PruneGrace into a cruft pack; older ones are dropped. Without it a run is
	// incremental: loose objects and the small packs that break the geometric
	// progression are rolled up, and big packs are left alone, so its cost follows
	// what was pushed since the last run, not the repository's size. Objects that
	// became unreachable after they were packed (a deleted branch) go only in a full run.
	Full bool
	// PruneGrace is how old an unreachable object must be before it is deleted. Default
	// DefaultPruneGrace. It protects pushes running at the same time: a push writes its
	// objects first and moves its refs last, so for a moment the new objects are
	// unreachable; and a push may reference an object the repository already has but no
	// ref reaches (a branch deleted a minute ago, which the client still had). Both are
	// young, or were freshened (git updates an existing object's mtime when it would
	// write it again), so pruning only what has been unreachable for this long never
	// takes an object from under a push.
	PruneGrace time.Duration
	// PackThreads and PackWindowMemory are git's pack.threads and pack.windowMemory for
	// the repack, in bytes; 0 leaves git's defaults (one thread per CPU, no memory bound).
	PackThreads      int
	PackWindowMemory int64
}

// Step is one git command of a run.
type Step struct {
	// Name says what the step is for, e.g. "repack"; it labels metrics and errors.
	Name string
	Args []string
}

// Plan returns the git commands of a run, in order:
//
//  1. prune (before the repack): delete loose unreachable objects older than the grace,
//     so the repack does not keep them alive in a pack.
//  2. repack: incremental (geometric, factor 2: each pack at least twice the size of the
//     next smaller one, so a run rewrites O(log n) packs) or full with a cruft pack;
//     loose objects are rolled in either way. It writes a multi-pack index with a
//     reachability bitmap, which lets pack-objects count a clone's objects without
//     walking history. git 2.32 added --geometric, 2.34 multi-pack bitmaps, 2.37 cruft
//     packs.
//  3. commit-graph: a split (incremental) commit-graph of every reachable commit, which
//     makes history walks (negotiation, merge bases, rev-list) fast.
//
// Refs are not packed: git pack-refs --all --prune made a push that ran at the same
// time fail with "cannot lock ref 'refs/heads/main': is at X but expected Y"
// (TestPushesDuringRuns, git 2.39): receive-pack read a packed-refs file it had cached
// while pack-refs replaced it and deleted the loose ref. gitssh writes no packed refs
// itself, so every branch stays a loose file, which git reads one per ref.
func Plan(opts Options) []Step {
	expire := "--expire=" + strconv.FormatInt(time.Now().Add(-opts.pruneGrace()).Unix(), 10)
	repack := []string{"repack", "-d", "--geometric=2", "--write-midx", "--write-bitmap-index", "--quiet"}
	if opts.Full {
		repack = []string{"repack", "-a", "-d", "--cruft", "--cruft-expiration=" + strings.TrimPrefix(expire, "--expire="),
			"--write-midx", "--write-bitmap-index", "--quiet"}
	}
	return []Step{
		{Name: "prune", Args: []string{"prune", expire}},
		{Name: "repack", Args: repack},
		{Name: "commit-graph", Args: []string{"commit-graph", "write", "--reachable", "--split", "--no-progress"}},
	}
}

func (o Options) pruneGrace() time.Duration {
	if o.PruneGrace <= 0 {
		return DefaultPruneGrace
	}
	return o.PruneGrace
}

// StepError is a step that failed; Output is the end of what git wrote.
type StepError struct {
	Step   string
	Err    error
	Output string
}

func (e *StepError) Error() string {
	msg := fmt.Sprintf("git %s failed: %v", e.Step, e.Err)
	if e.Output != "" {
		msg += ": " + e.Output
	}
	return msg
}

func (e *StepError) Unwrap() error { return e.Err }

// maxOutput is how much of git's output an error carries: enough for git's message, short
// enough for a condition.
const maxOutput = 512

// Run runs Plan(opts) on the bare repository at dir, one step after the other, and stops at
// the first that fails (after retries) with a *StepError. Cancelling ctx kills the running git and its
// children; what they leave (temporary packs) is ignored by git and removed by the next run.
// Callers must not run two at once on one repository: git's own locks would make the second
// fail, not wait.
func Run(ctx context.Context, dir string, opts Options) error {
	if _, err := os.Stat(filepath.Join(dir, "objects")); err != nil {
		return fmt.Errorf("%s is not a bare repository: %w", dir, err)
	}
	for _, step := range Plan(opts) {
		var err error
		for range attempts {
			if err = runGit(ctx, dir, opts, step); err == nil || ctx.Err() != nil {
				break
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// attempts is how often a failing step is tried. A push that lands while repack writes
// the multi-pack bitmap can make it fail ("Packfile doesn't have full closure": the refs
// it read name objects of a pack it did not include); git then exits before deleting
// anything, and the next attempt sees the push whole (TestPushesDuringRuns).
const attempts = 3

func runGit(ctx context.Context, dir string, opts Options, step Step) error {
	git := opts.GitBinary
	if git == "" {
		git = "git"
	}
	cmd := exec.CommandContext(ctx, git, append(Config(dir, opts), step.Args...)...)
	cmd.Dir = dir
	cmd.Env = gitenv.Env()
	// Its own process group, so that cancelling also kills the pack-objects that repack
	// starts; Wait reaps them all (gitssh may be PID 1, which must leave no zombies).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			err = errors.Join(ctx.Err(), err)
		}
		return &StepError{Step: step.Name, Err: err, Output: tail(strings.TrimSpace(string(out)), maxOutput)}
	}
	return nil
}

// Config is the "-c" settings every housekeeping git command runs with. Like the SSH
// server's (sshserver/gitconfig.go) they win over the repository's own config, so a
// repository cannot turn housekeeping into something else.
func Config(dir string, opts Options) []string {
	settings := []string{
		// The repository may be owned by another uid (a restored backup); only it is trusted.
		"safe.directory=" + dir,
		// No hooks: git gc would run pre-auto-gc, and a repository's hooks/ is not ours.
		"core.hooksPath=" + os.DevNull,
		// Housekeeping is this package's job; the commands must not start their own
		// (detached) git gc --auto, which would outlive the run unreaped.
		"gc.auto=0", "maintenance.auto=false",
	}
	if opts.PackThreads > 0 {
		settings = append(settings, "pack.threads="+strconv.Itoa(opts.PackThreads))
	}
	if opts.PackWindowMemory > 0 {
		settings = append(settings, "pack.windowMemory="+strconv.FormatInt(opts.PackWindowMemory, 10))
	}
	args := make([]string, 0, 2*len(settings))
	for _, s := range settings {
		args = append(args, "-c", s)
	}
	return args
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
