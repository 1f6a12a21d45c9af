package sshserver

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// slowUploadPack is a git wrapper for Config.GitBinary: upload-pack takes a
// second longer and writes when it starts and ends to the returned log, so a
// test can see how many ran at once.
func slowUploadPack(g *WithT, dir string, delay time.Duration) (git, log string) {
	log = filepath.Join(dir, "upload-pack.log")
	git = filepath.Join(dir, "slow-git")
	script := fmt.Sprintf(`#!/bin/sh
for a; do
	if [ "$a" = upload-pack ]; then
		echo start >>%[1]s; sleep %[2]g; git "$@"; rc=$?; echo end >>%[1]s; exit $rc
	fi
done
exec git "$@"
`, log, delay.Seconds())
	g.Expect(os.WriteFile(git, []byte(script), 0o755)).To(Succeed())
	return git, log
}

// mostAtOnce reads a slowUploadPack log: the most upload-packs that ran at once.
func mostAtOnce(g *WithT, log string) (most, total int) {
	data, err := os.ReadFile(log)
	g.Expect(err).NotTo(HaveOccurred())
	running := 0
	for _, line := range strings.Fields(string(data)) {
		if line == "start" {
			running++
			total++
		} else {
			running--
		}
		most = max(most, running)
	}
	return most, total
}

// N+1 clones at once under a limit of N: one waits for a turn, told so on its
// stderr, and all succeed; never more than N run at once. Both the server's
// and the repository's limit.
func TestUploadPacksQueue(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		message string
	}{
		{"server", Config{MaxUploadPacks: 2, MaxUploadPacksPerRepo: -1}, "2 clones and fetches of this server are running"},
		{"repository", Config{MaxUploadPacks: 10, MaxUploadPacksPerRepo: 2}, "2 clones and fetches of this repository are running"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			var log string
			tc.cfg.GitBinary, log = slowUploadPack(g, t.TempDir(), time.Second)
			e := newEnv(t, tc.cfg)
			outs := make([]string, 3)
			errs := make([]error, 3)
			var wg sync.WaitGroup
			for i := range outs {
				wg.Go(func() {
					outs[i], errs[i] = e.gitAs("alice", e.dir, "clone", "--bare", e.url("acme/api.git"), fmt.Sprintf("clone%d", i))
				})
			}
			wg.Wait()
			for i := range outs {
				g.Expect(errs[i]).NotTo(HaveOccurred(), outs[i])
			}
			g.Expect(strings.Join(outs, "")).To(ContainSubstring("gitssh: waiting for a turn: " + tc.message))
			most, total := mostAtOnce(g, log)
			g.Expect(total).To(Equal(3))
			g.Expect(most).To(Equal(2))
		})
	}
}

// Another repository's clones do not wait for a busy one.
func TestUploadPacksOfOtherRepositoriesDoNotWait(t *testing.T) {
	g := NewWithT(t)
	cfg := Config{MaxUploadPacks: 10, MaxUploadPacksPerRepo: 1}
	var log string
	cfg.GitBinary, log = slowUploadPack(g, t.TempDir(), time.Second)
	e := newEnv(t, cfg)
	var wg sync.WaitGroup
	outs := make([]string, 2)
	for i, repo := range []string{"acme/api.git", "acme/pub.git"} {
		wg.Go(func() {
			var err error
			outs[i], err = e.gitAs("alice", e.dir, "clone", "--bare", e.url(repo), fmt.Sprintf("clone%d", i))
			g.Expect(err).NotTo(HaveOccurred(), outs[i])
		})
	}
	wg.Wait()
	g.Expect(strings.Join(outs, "")).NotTo(ContainSubstring("waiting"))
	most, _ := mostAtOnce(g, log)
	g.Expect(most).To(Equal(2))
}

// A clone that waits longer than UploadQueueTimeout is refused with a message
// that names the limit and says what to do.
func TestUploadQueueTimeout(t *testing.T) {
	g := NewWithT(t)
	cfg := Config{MaxUploadPacks: 1, UploadQueueTimeout: 300 * time.Millisecond, Metrics: NewMetrics(prometheus.NewRegistry())}
	cfg.GitBinary, _ = slowUploadPack(g, t.TempDir(), 3*time.Second)
	e := newEnv(t, cfg)
	first := make(chan error, 1)
	go func() {
		out, err := e.gitAs("alice", e.dir, "clone", "--bare", e.url("acme/api.git"), "first")
		if err != nil {
			err = fmt.Errorf("%w: %s", err, out)
		}
		first <- err
	}()
	// The first clone holds the only slot once its upload-pack runs.
	g.Eventually(func() int { return e.srv.uploads.inUse() }).Should(Equal(1))
	out, err := e.gitAs("bob", e.dir, "clone", "--bare", e.url("acme/pub.git"), "second")
	g.Expect(err).To(HaveOccurred())
	g.Expect(out).To(ContainSubstring("gitssh: waiting for a turn: 1 clones and fetches of this server are running"))
	g.Expect(out).To(ContainSubstring("gitssh: the server is busy: it runs at most 1 clones and fetches of this server at a time (--ssh-max-upload-packs), and none ended within 300ms; try again in a few minutes"))
	g.Expect(testutil.ToFloat64(cfg.Metrics.uploadTimeouts)).To(Equal(1.0))
	g.Expect(testutil.ToFloat64(cfg.Metrics.uploadsWaiting)).To(BeZero())
	g.Expect(<-first).NotTo(HaveOccurred())
	g.Expect(e.srv.uploads.inUse()).To(BeZero(), "every slot was given back")
}

func TestPackSettings(t *testing.T) {
	for _, tc := range []struct {
		cpus    float64
		memory  int64
		uploads int
		threads int
		window  int64
	}{
		{0, 0, 8, 0, 0},                 // no limits known: git's defaults
		{2, 0, 4, 2, 0},                 // CPU only
		{0.5, 1 << 30, 1, 1, 512 << 20}, // under one CPU: one thread
		{2, 1 << 30, 4, 2, 64 << 20},    // 512 MiB shared by 4 packs of 2 threads
		{4, 256 << 20, 8, 4, 8 << 20},   // the floor
		{1.9, 2 << 30, 2, 1, 512 << 20}, // cores round down
	} {
		threads, window := PackSettings(tc.cpus, tc.memory, tc.uploads)
		if threads != tc.threads || window != tc.window {
			t.Errorf("PackSettings(%v, %d, %d) = %d, %d; want %d, %d", tc.cpus, tc.memory, tc.uploads, threads, window, tc.threads, tc.window)
		}
	}
}
