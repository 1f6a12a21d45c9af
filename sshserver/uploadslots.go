package sshserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// uploadSlots bounds the upload-pack and upload-archive commands (each runs a
// pack-objects or an archiver, the costly part of a clone) that run at once
// on this server and on one repository; with the pack cache, the pack-objects
// runs of upload-pack instead (see Config.PackCache's Turn in New). A command
// over either bound waits in line instead of being refused: CI that starts 50
// clones at once gets them all, a few at a time.
type uploadSlots struct {
	server  chan struct{} // nil: no bound
	perRepo int           // 0: no bound
	mu      sync.Mutex
	repos   map[string]*repoSlots
}

type repoSlots struct {
	slots chan struct{}
	users int // commands holding or waiting for a slot; the entry goes at 0
}

func newUploadSlots(server, perRepo int) *uploadSlots {
	u := &uploadSlots{repos: map[string]*repoSlots{}}
	if server > 0 {
		u.server = make(chan struct{}, server)
	}
	if perRepo > 0 {
		u.perRepo = perRepo
	}
	return u
}

// busyError says which bound a command waited on for too long.
type busyError struct {
	limit int
	what  string // "this repository" or "this server"
	flag  string
	wait  time.Duration
}

func (e *busyError) Error() string {
	return fmt.Sprintf("the server is busy: it runs at most %d clones and fetches of %s at a time (%s), and none ended within %s; try again in a few minutes",
		e.limit, e.what, e.flag, e.wait)
}

// acquire waits up to timeout for a slot of repository path and one of the
// server, in that order, so that commands waiting for a busy repository do not
// hold server slots that other repositories could use. waiting is called once
// if the command has to wait, with the bound it waits on. It returns the
// function that gives the slots back, or a *busyError, or ctx's error when the
// client went away.
func (u *uploadSlots) acquire(ctx context.Context, path string, timeout time.Duration, waiting func(limit int, what string)) (release func(), err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var repo *repoSlots
	if u.perRepo > 0 {
		u.mu.Lock()
		repo = u.repos[path]
		if repo == nil {
			repo = &repoSlots{slots: make(chan struct{}, u.perRepo)}
			u.repos[path] = repo
		}
		repo.users++
		u.mu.Unlock()
	}
	leave := func() {
		if repo == nil {
			return
		}
		u.mu.Lock()
		if repo.users--; repo.users == 0 {
			delete(u.repos, path)
		}
		u.mu.Unlock()
	}
	told := false
	take := func(slots chan struct{}, what, flag string) error {
		select {
		case slots <- struct{}{}:
			return nil
		default:
		}
		if !told && waiting != nil {
			waiting(cap(slots), what)
			told = true
		}
		select {
		case slots <- struct{}{}:
			return nil
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return &busyError{limit: cap(slots), what: what, flag: flag, wait: timeout}
			}
			return ctx.Err()
		}
	}
	if repo != nil {
		if err := take(repo.slots, "this repository", "--ssh-max-upload-packs-per-repo"); err != nil {
			leave()
			return nil, err
		}
	}
	if u.server != nil {
		if err := take(u.server, "this server", "--ssh-max-upload-packs"); err != nil {
			if repo != nil {
				<-repo.slots
			}
			leave()
			return nil, err
		}
	}
	return func() {
		if u.server != nil {
			<-u.server
		}
		if repo != nil {
			<-repo.slots
		}
		leave()
	}, nil
}

// uploadTurn waits for an upload slot of the repository dir, telling the
// client on stderr if it has to, and returns the func that gives it back, or
// a *busyError, or ctx's error.
func (s *Server) uploadTurn(ctx context.Context, dir string, stderr io.Writer, log logr.Logger) (release func(), err error) {
	waited := false
	release, err = s.uploads.acquire(ctx, dir, s.cfg.UploadQueueTimeout, func(limit int, what string) {
		waited = true
		s.cfg.Metrics.uploadWaiting(1)
		fmt.Fprintf(stderr, "gitssh: waiting for a turn: %d clones and fetches of %s are running\n", limit, what)
		log.Info("Queued command", "limit", limit, "of", what)
	})
	if waited {
		s.cfg.Metrics.uploadWaiting(-1)
	}
	var busy *busyError
	if errors.As(err, &busy) {
		s.cfg.Metrics.uploadQueueTimeout()
		log.Info("Refused command: waited too long for a turn", "limit", busy.limit, "of", busy.what, "waited", busy.wait)
	}
	return release, err
}

// Defaults of the upload limits, from the CPUs this process may use
// (GOMAXPROCS follows the container's CPU limit since Go 1.25).
func defaultMaxUploadPacks() int { return 2 * runtime.GOMAXPROCS(0) }

// PackSettings derives git's pack.threads and pack.windowMemory from the
// pod's CPU limit (in cores) and memory limit (in bytes), for
// maxUploadPacks pack-objects at a time. git's defaults are one thread per CPU
// of the node, not of the container, and no memory bound on the delta search
// window, which lets a few concurrent clones of a repository with large files
// take gigabytes. Half the memory limit is shared among the pack-objects that
// may run at once, and each one's share among its threads (windowMemory is
// per thread); the rest is left to git's other needs and to gitssh. A zero
// limit leaves git's default: threads 0 (git: one per CPU) or windowMemory 0
// (git: unbounded).
func PackSettings(cpus float64, memory int64, maxUploadPacks int) (threads int, windowMemory int64) {
	if cpus > 0 {
		threads = max(1, int(cpus))
	}
	if memory > 0 {
		const floor = 8 << 20 // smaller windows find too few deltas to be worth it
		windowMemory = max(floor, memory/2/int64(max(1, maxUploadPacks))/int64(max(1, threads)))
	}
	return threads, windowMemory
}

// inUse is the number of server slots held (tests).
func (u *uploadSlots) inUse() int {
	if u.server == nil {
		return 0
	}
	return len(u.server)
}
