package sshserver

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gitssh-dev/gitssh/internal/packcache"
)

// cacheEnv is a server with the pack cache on, whose git is a wrapper that
// counts pack-objects runs and fails the next one when told to.
type cacheEnv struct {
	*env
	reg      *prometheus.Registry
	cacheDir string
	runs     string // one line per pack-objects run
	failNext string // while this file exists, pack-objects writes half a pack and fails
	hold     string // while this file exists, pack-objects waits before it starts
	pause    string // while this file exists, pack-objects stops after pauseAt bytes
	// protocol is what clients speak: "2" (git's default), whose clones the
	// cache answers whole, or "1", whose upload-pack gets its pack from the
	// cache (as a v2 fetch the cache cannot answer whole does).
	protocol string
}

// pauseAt is where pack-objects pauses, as long as the pause file exists.
const pauseAt = 512 << 10

func newCacheEnv(t *testing.T, cfg Config) *cacheEnv {
	t.Helper()
	return newCacheEnvOn(t, cfg, nil)
}

// newCacheEnvOn is newCacheEnv with mount called on the cache's directory
// before the server starts, to put a volume of the test's there.
func newCacheEnvOn(t *testing.T, cfg Config, mount func(dir string)) *cacheEnv {
	t.Helper()
	real, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git not installed")
	}
	dir := t.TempDir()
	ce := &cacheEnv{reg: prometheus.NewRegistry(), cacheDir: filepath.Join(dir, "cache"),
		runs: filepath.Join(dir, "runs"), failNext: filepath.Join(dir, "fail-next"), hold: filepath.Join(dir, "hold"),
		pause: filepath.Join(dir, "pause"), protocol: "2"}
	wrapper := filepath.Join(dir, "git")
	script := fmt.Sprintf(`#!/bin/sh
case " $* " in
*" upload-pack --stateless-rpc "*) echo answer >>%[1]s.answers ;;
esac
case " $* " in
*" pack-objects "*)
	echo run >>%[1]s
	while [ -e %[4]s ]; do sleep 0.05; done
	if [ -e %[2]s ]; then
		cat >/dev/null
		printf 'PACK\0\0\0\2\0\0\0\7half a pack'
		exit 1
	fi
	if [ -e %[5]s ]; then
		%[3]s "$@" >%[5]s.pack || exit
		head -c %[6]d %[5]s.pack
		while [ -e %[5]s ]; do sleep 0.05; done
		exec tail -c +%[7]d %[5]s.pack
	fi ;;
esac
exec %[3]s "$@"
`, ce.runs, ce.failNext, real, ce.hold, ce.pause, pauseAt, pauseAt+1)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if mount != nil {
		if err := os.Mkdir(ce.cacheDir, 0o700); err != nil {
			t.Fatal(err)
		}
		mount(ce.cacheDir)
	}
	cfg.GitBinary, cfg.PackCache.Dir, cfg.PackCache.Registerer = wrapper, ce.cacheDir, ce.reg
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(ce.reg)
	}
	ce.env = newEnv(t, cfg)
	return ce
}

// packObjectsRuns counts pack-objects runs, cached or not.
func (ce *cacheEnv) packObjectsRuns() int {
	b, _ := os.ReadFile(ce.runs)
	return strings.Count(string(b), "run\n")
}

// answerRuns counts the cache's upload-pack runs, each the answer to a v2 fetch.
func (ce *cacheEnv) answerRuns() int {
	b, _ := os.ReadFile(ce.runs + ".answers")
	return strings.Count(string(b), "answer\n")
}

// metric sums the samples of a metric whose labels include the given ones.
func (ce *cacheEnv) metric(name string, labels ...string) float64 {
	families, err := ce.reg.Gather()
	if err != nil {
		ce.t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	samples:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
				}
				if !found {
					continue samples
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// cachedPacks lists the finished entries on disk.
func (ce *cacheEnv) cachedPacks() []string {
	all, _ := filepath.Glob(filepath.Join(ce.cacheDir, "*.pack"))
	var done []string
	for _, p := range all {
		if !strings.HasPrefix(filepath.Base(p), "tmp-") {
			done = append(done, p)
		}
	}
	return done
}

// clone clones acme/api as bob with extra options, checks the clone and
// returns what git said.
func (ce *cacheEnv) clone(g *WithT, dir string, opts ...string) string {
	out, err := ce.tryClone("acme/api.git", dir, opts...)
	g.Expect(err).NotTo(HaveOccurred(), out)
	fsck, err := ce.gitAs("", dir, "fsck", "--no-progress", "--no-dangling")
	g.Expect(err).NotTo(HaveOccurred(), fsck)
	return out
}

// tryClone clones repo as bob with extra options.
func (ce *cacheEnv) tryClone(repo, dir string, opts ...string) (string, error) {
	args := append([]string{"-c", "protocol.version=" + ce.protocol, "clone", "-q", "--bare"}, opts...)
	return ce.gitAs("bob", ce.dir, append(args, ce.url(repo), dir)...)
}

// addBranch writes a branch holding one file of size random bytes straight
// into acme/api, so that each branch has a pack of about that size.
func addBranch(e *env, branch string, size int) {
	data := make([]byte, size)
	rand.Read(data)
	cmd := exec.Command("git", "fast-import", "--quiet")
	cmd.Dir = filepath.Join(e.dir, "repos", "acme", "api.git")
	cmd.Stdin = strings.NewReader(fmt.Sprintf("commit refs/heads/%s\ncommitter T <t@example.com> %d +0000\ndata 3\n%s\nM 100644 inline data.bin\ndata %d\n%s\n",
		branch, historyStart, branch[:3], size, data))
	if out, err := cmd.CombinedOutput(); err != nil {
		e.t.Fatalf("git fast-import: %v\n%s", err, out)
	}
}

// Identical clones at once share one pack-objects run, which takes the only
// turn: hits take none, so none waits. The same with the default bounds (as
// the chart's) and a CI fan-out of 30 (as hack/bench's fan-out case), many
// more clones than turns.
func TestPackCacheParallelClones(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      Config
		n        int
		protocol string
	}{
		{"one turn", Config{MaxUploadPacks: 1}, 10, "2"},
		{"default turns", Config{}, 30, "2"},
		{"one turn, protocol v1", Config{MaxUploadPacks: 1}, 10, "1"},
	} {
		t.Run(tc.name, func(t *testing.T) { testParallelClones(t, tc.cfg, tc.n, tc.protocol) })
	}
}

// In protocol v2 the clones share one answer of upload-pack (one
// gitssh_pack_cache_responses_total miss), whose pack-objects is one
// request for a pack; in v1 each has its upload-pack, and they share the
// pack.
func testParallelClones(t *testing.T, cfg Config, n int, protocol string) {
	ce := newCacheEnv(t, cfg)
	ce.protocol = protocol
	shared, packRequests, entries := "gitssh_pack_cache_requests_total", n, 1
	if protocol == "2" {
		shared, packRequests, entries = "gitssh_pack_cache_responses_total", 1, 2
	}
	fillHistory(ce.env, "api")
	g := NewWithT(t)

	// pack-objects is held until every clone has asked for the pack: all
	// wait for the one run, and read its pack as it is written.
	g.Expect(os.WriteFile(ce.hold, nil, 0o600)).To(Succeed())
	var wg sync.WaitGroup
	clones, outs := make([]string, n), make([]string, n)
	for i := range n {
		clones[i] = filepath.Join(ce.dir, fmt.Sprintf("clone-%d", i))
		wg.Go(func() { outs[i] = ce.clone(NewWithT(t), clones[i]) })
	}
	g.Eventually(func() float64 { return ce.metric(shared) }, "60s").Should(Equal(float64(n)))
	g.Eventually(func() float64 { return ce.metric("gitssh_pack_cache_requests_total") }, "60s").Should(Equal(float64(packRequests)))
	// The request is counted before the hook starts git pack-objects,
	// whose first act is to note its run: poll, not look.
	g.Eventually(ce.packObjectsRuns, "60s").Should(Equal(1))
	g.Expect(ce.metric("gitssh_ssh_upload_packs_waiting")).To(BeZero(), "a hit takes no turn")
	g.Expect(ce.cachedPacks()).To(BeEmpty(), "no entry is final before pack-objects has succeeded")
	g.Expect(os.Remove(ce.hold)).To(Succeed())
	wg.Wait()
	g.Expect(ce.packObjectsRuns()).To(Equal(1), "identical clones, one pack-objects")
	g.Expect(strings.Join(outs, "")).NotTo(ContainSubstring("waiting"))
	g.Expect(ce.metric(shared, "result", "miss")).To(Equal(1.0))
	g.Expect(ce.metric(shared, "result", "hit")).To(Equal(float64(n - 1)))
	head := ce.git(clones[0], "rev-parse", "main")
	for _, c := range clones {
		g.Expect(ce.git(c, "rev-parse", "main")).To(Equal(head))
	}
	generated := ce.metric("gitssh_pack_cache_generated_bytes_total")
	g.Expect(generated).To(BeNumerically(">", 0))
	if protocol == "2" {
		// The pack once to upload-pack, and its answer (the pack in
		// side-band pkt-lines, so the larger file) to every client.
		var sizes []int64
		for _, p := range ce.cachedPacks() {
			fi, err := os.Stat(p)
			g.Expect(err).NotTo(HaveOccurred())
			sizes = append(sizes, fi.Size())
		}
		slices.Sort(sizes)
		g.Expect(sizes).To(HaveLen(2))
		g.Expect(float64(sizes[0] + sizes[1])).To(Equal(generated))
		g.Expect(ce.metric("gitssh_pack_cache_served_bytes_total")).To(Equal(float64(sizes[0] + int64(n)*sizes[1])))
	} else {
		g.Expect(ce.metric("gitssh_pack_cache_served_bytes_total")).To(Equal(float64(n) * generated))
	}
	g.Expect(ce.cachedPacks()).To(HaveLen(entries))
}

func TestPackCacheKeys(t *testing.T) {
	ce := newCacheEnv(t, Config{})
	fillHistory(ce.env, "api")
	addBranch(ce.env, "other", 1000)
	// Each request twice: the first runs pack-objects, the second is served
	// from the cache. Every request differs from all others in something.
	for i, opts := range [][]string{
		{"--single-branch", "--branch=main"},
		{"--single-branch", "--branch=other"},
		{"--depth=1", "--branch=main"},
		{"--depth=2", "--branch=main"},
		{"--filter=blob:none"},
		{"--filter=blob:limit=1k"},
		{"--filter=tree:0"},
		// Three commits; two would be the same request as --depth=2.
		{"--shallow-since=@" + fmt.Sprint(historyStart+86400+3600)},
		{"--no-tags"},
	} {
		t.Run(strings.Join(opts, " "), func(t *testing.T) {
			g := NewWithT(t)
			for round := range 2 {
				ce.clone(g, filepath.Join(t.TempDir(), "clone"), opts...)
				g.Expect(ce.packObjectsRuns()).To(Equal(i+1), "round %d", round)
			}
			g.Expect(ce.metric("gitssh_pack_cache_responses_total", "result", "hit")).To(Equal(float64(i + 1)))
		})
	}

	// A fetch into a clone sends haves: another key again, and a correct pack.
	g := NewWithT(t)
	clone := filepath.Join(ce.dir, "fetcher")
	ce.clone(g, clone, "--single-branch", "--branch=main")
	before := ce.packObjectsRuns()
	addBranch(ce.env, "newer", 500)
	out, err := ce.gitAs("bob", clone, "fetch", "-q", "origin", "newer:newer")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(ce.packObjectsRuns()).To(Equal(before + 1))
	out, err = ce.gitAs("", clone, "fsck", "--no-progress")
	g.Expect(err).NotTo(HaveOccurred(), out)
}

func TestPackCacheEviction(t *testing.T) {
	ce := newCacheEnv(t, Config{PackCache: packcache.Config{MaxBytes: 100 << 10}})
	ce.protocol = "1" // the pack layer alone (v2 clones: TestFetchResponse*)
	g := NewWithT(t)
	for _, b := range []string{"aaa", "bbb", "ccc"} {
		addBranch(ce.env, b, 60<<10)
	}
	clone := func(branch string) {
		ce.clone(g, filepath.Join(ce.dir, "clone-"+fmt.Sprint(time.Now().UnixNano())), "--single-branch", "--branch="+branch)
	}
	clone("aaa")
	clone("bbb") // aaa goes: both do not fit in 100 KiB
	g.Expect(ce.metric("gitssh_pack_cache_evictions_total", "reason", "size")).To(Equal(1.0))
	g.Expect(ce.cachedPacks()).To(HaveLen(1))
	g.Expect(ce.metric("gitssh_pack_cache_bytes")).To(BeNumerically("<=", 100<<10))
	g.Expect(ce.metric("gitssh_pack_cache_max_bytes")).To(Equal(float64(100 << 10)))
	runs := ce.packObjectsRuns()
	clone("bbb")
	g.Expect(ce.packObjectsRuns()).To(Equal(runs), "bbb is still cached")
	clone("aaa")
	g.Expect(ce.packObjectsRuns()).To(Equal(runs+1), "aaa was evicted")

	var size int64
	for _, p := range ce.cachedPacks() {
		fi, err := os.Stat(p)
		g.Expect(err).NotTo(HaveOccurred())
		size += fi.Size()
	}
	g.Expect(size).To(BeNumerically("<=", 100<<10))
}

func TestPackCacheTTL(t *testing.T) {
	ce := newCacheEnv(t, Config{PackCache: packcache.Config{TTL: 50 * time.Millisecond}})
	fillHistory(ce.env, "api")
	g := NewWithT(t)
	ce.clone(g, filepath.Join(ce.dir, "one"))
	time.Sleep(60 * time.Millisecond) // the TTL itself is under test
	ce.clone(g, filepath.Join(ce.dir, "two"))
	g.Expect(ce.packObjectsRuns()).To(Equal(2))
	g.Expect(ce.metric("gitssh_pack_cache_evictions_total", "reason", "ttl")).To(BeNumerically(">=", 1))
}

func TestPackCacheNeverServesAFailedPack(t *testing.T) {
	ce := newCacheEnv(t, Config{})
	ce.protocol = "1" // the pack layer alone (v2 clones: TestFetchResponse*)
	fillHistory(ce.env, "api")
	g := NewWithT(t)

	// pack-objects writes half a pack and fails: that clone fails, and
	// nothing of it stays in the cache.
	g.Expect(os.WriteFile(ce.failNext, nil, 0o600)).To(Succeed())
	out, err := ce.tryClone("acme/api.git", filepath.Join(ce.dir, "broken"))
	g.Expect(err).To(HaveOccurred(), out)
	g.Expect(os.Remove(ce.failNext)).To(Succeed())
	g.Expect(ce.cachedPacks()).To(BeEmpty())
	left, _ := filepath.Glob(filepath.Join(ce.cacheDir, "tmp-*"))
	g.Expect(left).To(BeEmpty())

	// The next identical clone runs pack-objects again and is whole.
	runs := ce.packObjectsRuns()
	ce.clone(g, filepath.Join(ce.dir, "good"))
	g.Expect(ce.packObjectsRuns()).To(Equal(runs + 1))
	g.Expect(ce.cachedPacks()).To(HaveLen(1))
}

// startClone runs tryClone in the background; the channel gets its output,
// and the error appended when it failed.
func (ce *cacheEnv) startClone(repo, dir string, opts ...string) <-chan string {
	done := make(chan string, 1)
	go func() {
		out, err := ce.tryClone(repo, dir, opts...)
		if err != nil {
			out += "\nclone failed: " + err.Error()
		}
		done <- out
	}()
	return done
}

// With the cache on, a miss waits for a turn to run pack-objects, inside the
// cache: both clones reach the cache at once, the second's pack-objects waits
// for the first's, and the client is told on its progress channel.
func TestPackCacheMissesWaitForATurn(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		second  []string // repository and clone options of the second clone
		message string
	}{
		{"server", Config{MaxUploadPacks: 1}, []string{"acme/pub.git"}, "1 clones and fetches of this server are running"},
		{"repository", Config{MaxUploadPacks: 10, MaxUploadPacksPerRepo: 1}, []string{"acme/api.git", "--single-branch", "--branch=other"}, "1 clones and fetches of this repository are running"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			ce := newCacheEnv(t, tc.cfg)
			fillHistory(ce.env, "api")
			fillHistory(ce.env, "pub")
			addBranch(ce.env, "other", 1000)

			g.Expect(os.WriteFile(ce.hold, nil, 0o600)).To(Succeed())
			first := ce.startClone("acme/api.git", filepath.Join(ce.dir, "first"), "--single-branch", "--branch=main")
			g.Eventually(ce.packObjectsRuns, "30s").Should(Equal(1), "the first clone's pack-objects holds the turn")
			second := ce.startClone(tc.second[0], filepath.Join(ce.dir, "second"), tc.second[1:]...)
			g.Eventually(func() float64 { return ce.metric("gitssh_ssh_upload_packs_waiting") }, "30s").Should(Equal(1.0))
			g.Expect(ce.metric("gitssh_pack_cache_requests_total", "result", "miss")).To(Equal(2.0), "both clones are in the cache")
			g.Expect(ce.packObjectsRuns()).To(Equal(1))

			g.Expect(os.Remove(ce.hold)).To(Succeed())
			g.Expect(<-first).NotTo(ContainSubstring("waiting"))
			g.Expect(<-second).To(And(
				ContainSubstring("remote: gitssh: waiting for a turn: "+tc.message),
				Not(ContainSubstring("clone failed")),
			))
			g.Expect(ce.packObjectsRuns()).To(Equal(2))
			g.Expect(ce.metric("gitssh_ssh_upload_packs_waiting")).To(BeZero())
			g.Expect(ce.srv.uploads.inUse()).To(BeZero(), "every turn was given back")
		})
	}
}

// A miss that waits longer than UploadQueueTimeout fails, with the busy
// message, for every clone that joined it; nothing of it stays in the cache.
func TestPackCacheQueueTimeoutFailsEveryJoiner(t *testing.T) {
	for _, protocol := range []string{"2", "1"} {
		t.Run("protocol v"+protocol, func(t *testing.T) { testQueueTimeoutFailsEveryJoiner(t, protocol) })
	}
}

// In v2 the joiners share the first's answer, and the pack-objects it
// waits for writes the busy message into it, for all three.
func testQueueTimeoutFailsEveryJoiner(t *testing.T, protocol string) {
	g := NewWithT(t)
	ce := newCacheEnv(t, Config{MaxUploadPacks: 1, UploadQueueTimeout: 10 * time.Second})
	ce.protocol = protocol
	shared, perClone := "gitssh_pack_cache_requests_total", 1 // entries per clone
	if protocol == "2" {
		shared, perClone = "gitssh_pack_cache_responses_total", 2 // and its answer
	}
	fillHistory(ce.env, "api")
	addBranch(ce.env, "other", 1000)
	tmpFiles := func() []string {
		tmp, _ := filepath.Glob(filepath.Join(ce.cacheDir, "tmp-*"))
		return tmp
	}

	g.Expect(os.WriteFile(ce.hold, nil, 0o600)).To(Succeed())
	first := ce.startClone("acme/api.git", filepath.Join(ce.dir, "first"), "--single-branch", "--branch=main")
	g.Eventually(ce.packObjectsRuns, "30s").Should(Equal(1))
	// Three clones of another commit: the first of them waits for a turn
	// (the repository's bound, 1 by default here, is the first it meets),
	// the other two join it while it waits.
	var waiting []<-chan string
	for i := range 3 {
		waiting = append(waiting, ce.startClone("acme/api.git", filepath.Join(ce.dir, fmt.Sprint("other-", i)), "--single-branch", "--branch=other"))
		if i == 0 {
			g.Eventually(func() float64 { return ce.metric("gitssh_ssh_upload_packs_waiting") }, "30s").Should(Equal(1.0))
		}
	}
	g.Eventually(func() float64 { return ce.metric(shared, "result", "hit") }, "9s").Should(Equal(2.0),
		"both joined before the queue timeout")
	g.Expect(ce.metric("gitssh_ssh_upload_packs_waiting")).To(Equal(1.0), "joiners wait with the run they joined")
	for _, w := range waiting {
		g.Expect(<-w).To(And(
			ContainSubstring("remote: gitssh: the server is busy: it runs at most 1 clones and fetches of this repository at a time (--ssh-max-upload-packs-per-repo), and none ended within 10s; try again in a few minutes"),
			ContainSubstring("clone failed"),
			// upload-pack's words for a failed pack-objects, dropped (busyAbortFilter).
			Not(ContainSubstring("corruption")),
			Not(ContainSubstring("pack-objects died")),
		))
	}
	g.Expect(ce.metric("gitssh_ssh_upload_pack_queue_timeouts_total")).To(Equal(1.0))
	g.Expect(ce.metric("gitssh_ssh_upload_packs_waiting")).To(BeZero())
	g.Expect(ce.metric("gitssh_pack_cache_entries")).To(Equal(float64(perClone)), "only the first clone's entries")
	g.Expect(tmpFiles()).To(HaveLen(perClone))
	g.Expect(ce.packObjectsRuns()).To(Equal(1))

	g.Expect(os.Remove(ce.hold)).To(Succeed())
	g.Expect(<-first).NotTo(ContainSubstring("clone failed"))
	ce.clone(g, filepath.Join(ce.dir, "other-again"), "--single-branch", "--branch=other")
	g.Expect(ce.packObjectsRuns()).To(Equal(2), "the failed entry was not kept")
	g.Expect(ce.cachedPacks()).To(HaveLen(2 * perClone))
	g.Expect(tmpFiles()).To(BeEmpty())
	g.Expect(ce.srv.uploads.inUse()).To(BeZero())
}

// A request the cache does not serve runs pack-objects uncached, after a
// turn as a miss does. Here a repository that offers packfile URIs, which
// gives pack-objects --uri-protocol.
func TestPackCacheBypassWaitsForATurn(t *testing.T) {
	g := NewWithT(t)
	ce := newCacheEnv(t, Config{MaxUploadPacks: 1})
	fillHistory(ce.env, "api")
	pub := fillHistory(ce.env, "pub")
	ce.git(pub, "config", "uploadpack.allowSidebandAll", "true")
	ce.git(pub, "config", "uploadpack.blobPackfileUri", strings.Repeat("1", 40)+" "+strings.Repeat("2", 40)+" https://example.invalid/p.pack")

	g.Expect(os.WriteFile(ce.hold, nil, 0o600)).To(Succeed())
	first := ce.startClone("acme/api.git", filepath.Join(ce.dir, "first"))
	g.Eventually(ce.packObjectsRuns, "30s").Should(Equal(1))
	// --progress: with sideband-all, git clone -q hides the remote's messages.
	bypass := ce.startClone("acme/pub.git", filepath.Join(ce.dir, "bypass"), "-c", "fetch.uriProtocols=https", "--progress")
	g.Eventually(func() float64 { return ce.metric("gitssh_ssh_upload_packs_waiting") }, "30s").Should(Equal(1.0))
	g.Expect(ce.metric("gitssh_pack_cache_requests_total", "result", "bypass")).To(Equal(1.0))
	g.Expect(ce.packObjectsRuns()).To(Equal(1))

	g.Expect(os.Remove(ce.hold)).To(Succeed())
	g.Expect(<-first).NotTo(ContainSubstring("clone failed"))
	g.Expect(<-bypass).To(And(
		ContainSubstring("remote: gitssh: waiting for a turn: 1 clones and fetches of this server are running"),
		Not(ContainSubstring("clone failed")),
	))
	g.Expect(ce.packObjectsRuns()).To(Equal(2))
	g.Expect(ce.cachedPacks()).To(HaveLen(2), "the first clone's pack and answer; the bypass left nothing in the cache")
	g.Expect(ce.srv.uploads.inUse()).To(BeZero())
}

// upload-archive runs no pack-objects: it waits for its turn before it
// starts, with the cache on too.
func TestPackCacheArchiveWaitsForATurn(t *testing.T) {
	g := NewWithT(t)
	ce := newCacheEnv(t, Config{MaxUploadPacks: 1})
	fillHistory(ce.env, "api")
	fillHistory(ce.env, "pub")

	g.Expect(os.WriteFile(ce.hold, nil, 0o600)).To(Succeed())
	first := ce.startClone("acme/api.git", filepath.Join(ce.dir, "first"))
	g.Eventually(ce.packObjectsRuns, "30s").Should(Equal(1))
	archive := make(chan string, 1)
	go func() {
		out, err := ce.gitAs("bob", ce.dir, "archive", "--remote", ce.url("acme/pub.git"), "--format=tar", "-o", "pub.tar", "main")
		if err != nil {
			out += "\narchive failed: " + err.Error()
		}
		archive <- out
	}()
	g.Eventually(func() float64 { return ce.metric("gitssh_ssh_upload_packs_waiting") }, "30s").Should(Equal(1.0))
	g.Expect(os.Remove(ce.hold)).To(Succeed())
	g.Expect(<-first).NotTo(ContainSubstring("clone failed"))
	g.Expect(<-archive).To(And(
		ContainSubstring("gitssh: waiting for a turn: 1 clones and fetches of this server are running"),
		Not(ContainSubstring("archive failed")),
	))
}

// A pack is sent on while pack-objects still writes it, to the client that
// started it and to one that asked meanwhile, and each gets the very bytes
// pack-objects wrote: the cache sends from a file that grows (with splice(2)).
func TestPackCacheStreamsAGrowingPack(t *testing.T) {
	ce := newCacheEnv(t, Config{})
	ce.protocol = "1" // the pack layer alone (v2 clones: TestFetchResponse*)
	addBranch(ce.env, "big", 2<<20)
	g := NewWithT(t)
	g.Expect(os.WriteFile(ce.hold, nil, 0o600)).To(Succeed())
	g.Expect(os.WriteFile(ce.pause, nil, 0o600)).To(Succeed())
	clones := []string{filepath.Join(ce.dir, "first"), filepath.Join(ce.dir, "second")}
	var wg sync.WaitGroup
	for _, c := range clones {
		wg.Go(func() { ce.clone(NewWithT(t), c, "--single-branch", "--branch=big") })
	}
	g.Eventually(func() float64 { return ce.metric("gitssh_pack_cache_requests_total") }, "60s").Should(Equal(2.0))
	g.Expect(os.Remove(ce.hold)).To(Succeed())

	// Both clients receive the first part while pack-objects holds the rest.
	received := func(clone string) int64 {
		tmp, _ := filepath.Glob(filepath.Join(clone, "objects", "pack", "tmp_pack_*"))
		var n int64
		for _, f := range tmp {
			if fi, err := os.Stat(f); err == nil {
				n += fi.Size()
			}
		}
		return n
	}
	for _, c := range clones {
		g.Eventually(func() int64 { return received(c) }, "60s").Should(BeNumerically(">=", pauseAt/2), c)
	}
	g.Expect(ce.cachedPacks()).To(BeEmpty(), "pack-objects has not finished")
	g.Expect(os.Remove(ce.pause)).To(Succeed())
	wg.Wait()

	g.Expect(ce.packObjectsRuns()).To(Equal(1))
	g.Expect(ce.metric("gitssh_pack_cache_requests_total", "result", "hit")).To(Equal(1.0))
	cached := ce.cachedPacks()
	g.Expect(cached).To(HaveLen(1))
	want, err := os.ReadFile(cached[0])
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(len(want)).To(BeNumerically(">", 2*pauseAt))
	for _, c := range clones {
		got, _ := filepath.Glob(filepath.Join(c, "objects", "pack", "pack-*.pack"))
		g.Expect(got).To(HaveLen(1), c)
		b, err := os.ReadFile(got[0])
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(bytes.Equal(b, want)).To(BeTrue(), "%s received %d bytes, not the %d pack-objects wrote", c, len(b), len(want))
	}
}

// gitssh-pack-hook, the hook the image installs beside gitssh, serves clones
// from the cache as the test binary standing in for gitssh does.
func TestPackCacheWithTheHookBinary(t *testing.T) {
	hook := filepath.Join(t.TempDir(), packcache.HookName)
	build := exec.Command("go", "build", "-o", hook, "../cmd/gitssh-pack-hook")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ce := newCacheEnv(t, Config{PackCache: packcache.Config{HookBinary: hook}})
	ce.protocol = "1"
	fillHistory(ce.env, "api")
	g := NewWithT(t)
	for _, c := range []string{"one", "two"} {
		ce.clone(g, filepath.Join(ce.dir, c))
	}
	g.Expect(ce.packObjectsRuns()).To(Equal(1))
	g.Expect(ce.metric("gitssh_pack_cache_requests_total", "result", "hit")).To(Equal(1.0))
}

// A cache volume too small for a clone's pack makes it a bypass, under both
// protocols: the clones succeed with no cache, where a miss would have filled
// the volume and failed them (git: "No space left on device").
func TestPackCacheWithoutRoom(t *testing.T) {
	ce := newCacheEnvOn(t, Config{}, func(dir string) {
		if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
			t.Skipf("a 1 MiB tmpfs for the cache needs root: %v", err)
		}
		t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	})
	fillHistory(ce.env, "api")
	addBranch(ce.env, "big", 3<<20) // a pack of 3 MiB: three times the volume
	g := NewWithT(t)
	for _, protocol := range []string{"2", "1"} {
		ce.protocol = protocol
		ce.clone(g, filepath.Join(ce.dir, "clone-v"+protocol))
	}
	g.Expect(ce.metric("gitssh_pack_cache_responses_total", "result", "bypass")).To(Equal(1.0), "the v2 clone's answer")
	g.Expect(ce.metric("gitssh_pack_cache_requests_total", "result", "bypass")).To(Equal(2.0), "both clones' pack-objects")
	g.Expect(ce.metric("gitssh_pack_cache_requests_total", "result", "miss")).To(BeZero())
	g.Expect(ce.packObjectsRuns()).To(Equal(2))
	g.Expect(ce.cachedPacks()).To(BeEmpty())
}
