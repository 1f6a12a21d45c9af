//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

const (
	packCacheDir = "/var/cache/gitssh/packs" // the chart's emptyDir
	metricsPort  = "8080"                    // the chart's metrics.port
)

// 10: CI fan-out: ten clones at once of a commit just pushed. One upload-pack answers
// their fetch into the chart's emptyDir and every clone is sent that answer; its
// pack-objects goes through the image's hook binary (non-root, read-only root
// filesystem) to the gitssh process, which writes the pack there too: all ten clones
// get that file, byte for byte.
func TestPackCacheFanOut(t *testing.T) {
	const clones = 10
	g := NewWithT(t)
	c := env(t)
	pod := c.podName(t)
	spec := c.kubectlOK(t, "get", "pod", pod, "-o", `jsonpath={.spec.volumes[?(@.name=="pack-cache")].emptyDir} `+
		`{.spec.containers[?(@.name=="gitssh")].volumeMounts[?(@.name=="pack-cache")].mountPath}`)
	g.Expect(strings.Fields(spec)).To(HaveExactElements(HavePrefix("{"), packCacheDir), "the pack-cache volume is an emptyDir at %s", packCacheDir)

	host, port := c.address(t)
	alice := c.newUser(t, "alice", c.knownHosts(t, host))
	c.newProject(t, "alice", "fanout")
	url := repoURL(host, port, "alice", "fanout")
	work := t.TempDir()
	alice.gitOK(t, work, "clone", url, "w")
	head := commitFile(t, alice, filepath.Join(work, "w"), "data", 1<<20)
	alice.gitOK(t, filepath.Join(work, "w"), "push", "-q", "origin", "HEAD:main")

	before := c.metrics(t, g, pod)
	errs := make(chan error, clones)
	for i := range clones {
		go func() {
			out, err := alice.git(t, work, "clone", "-q", url, fmt.Sprint("c", i))
			if err != nil {
				err = fmt.Errorf("clone %d: %w\n%s", i, err, out)
			}
			errs <- err
		}()
	}
	for range clones {
		g.Expect(<-errs).NotTo(HaveOccurred())
	}
	after := c.metrics(t, g, pod)
	delta := func(metric, result string) float64 {
		name := metric + `{result="` + result + `"}`
		return after[name] - before[name]
	}
	// git speaks protocol v2: the cache answers the clones' fetch whole.
	responses, requests := "gitssh_pack_cache_responses_total", "gitssh_pack_cache_requests_total"
	g.Expect(delta(responses, "miss")).To(Equal(1.0), "one upload-pack answered the fetch")
	g.Expect(delta(responses, "hit")).To(Equal(float64(clones-1)), "the other clones were sent its answer")
	g.Expect(delta(requests, "miss")).To(Equal(1.0), "one pack-objects run")
	g.Expect(delta(requests, "hit") + delta(requests, "bypass") + delta(responses, "bypass")).To(BeZero())

	packs := map[string]bool{}
	for i := range clones {
		dir := filepath.Join(work, fmt.Sprint("c", i))
		g.Expect(strings.TrimSpace(alice.gitOK(t, dir, "rev-parse", "HEAD"))).To(Equal(head))
		files, err := filepath.Glob(filepath.Join(dir, ".git/objects/pack/*.pack"))
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(files).To(HaveLen(1), "clone %d", i)
		data, err := os.ReadFile(files[0])
		g.Expect(err).NotTo(HaveOccurred())
		sum := sha256.Sum256(data)
		packs[hex.EncodeToString(sum[:])] = true
	}
	g.Expect(packs).To(HaveLen(1), "every clone received the same pack")
	// The small hook beside gitssh, which the cache picks when it is there (TestHookBeside):
	// the full gitssh binary would cost ~11 ms more CPU per fetch.
	c.kubectlOK(t, "exec", pod, "--", "test", "-x", "/usr/local/bin/gitssh-pack-hook")
	// git stores a clone's pack as received: the cached file has the same bytes.
	cached := c.kubectlOK(t, "exec", pod, "--", "sh", "-c", "sha256sum "+packCacheDir+"/*.pack")
	for sum := range packs {
		g.Expect(cached).To(ContainSubstring(sum), "the pack the clones got is in %s", packCacheDir)
	}
}

// 11: upload turns count pack-objects runs, not sessions. With ssh.maxUploadPacksPerRepo=1,
// a git command holds the repository's one turn (an upload-archive waiting for its
// arguments); clones of other commits, each a pack-objects run, wait in line, are told
// so, and all succeed once it ends, while a clone served from the pack cache takes no turn.
func TestUploadLimits(t *testing.T) {
	g := NewWithT(t)
	c := env(t)
	c.helmOK(t, "upgrade", release, c.chart, "--reuse-values", "--set", "ssh.maxUploadPacksPerRepo=1", "--wait", "--timeout", "5m")
	t.Cleanup(func() { c.rollback(t) })
	host, port := c.address(t)
	scanEventually(t, host, port)
	alice := c.newUser(t, "alice", c.knownHosts(t, host))
	c.newProject(t, "alice", "queue")
	url := repoURL(host, port, "alice", "queue")
	work := t.TempDir()
	alice.gitOK(t, work, "clone", url, "w")
	w := filepath.Join(work, "w")
	branches := []string{"main", "b1", "b2", "b3"}
	heads := map[string]string{}
	for _, b := range branches {
		heads[b] = commitFile(t, alice, w, b, 64<<10)
		alice.gitOK(t, w, "push", "-q", "origin", "+HEAD:refs/heads/"+b) // forced: a rerun replaces the last run's branches
	}
	clone := func(branch, dir string) (string, error) {
		return alice.git(t, work, "clone", "--single-branch", "--branch", branch, url, dir)
	}
	pod := c.podName(t)
	_, err := clone("main", "cached")
	g.Expect(err).NotTo(HaveOccurred())

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ssh := strings.Fields(alice.sshCommand)
	hold := exec.CommandContext(ctx, ssh[0], append(ssh[1:], "-p", port, "git@"+host, "git-upload-archive 'alice/queue.git'")...)
	stdin, err := hold.StdinPipe()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(hold.Start()).To(Succeed())
	defer hold.Wait()
	defer stdin.Close()
	// gitssh starts git once the command has its turn.
	g.Eventually(func() string {
		out, _ := c.kubectlErr(t, "exec", pod, "--", "sh", "-c", `for p in /proc/[0-9]*; do tr '\0' ' ' <$p/cmdline; echo; done`)
		return out
	}).WithTimeout(time.Minute).WithPolling(200*time.Millisecond).Should(ContainSubstring("upload-archive"), "the upload-archive holding the turn")

	out, err := clone("main", "hit")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).NotTo(ContainSubstring("waiting for a turn"), "a cache hit runs no pack-objects")

	before := c.metrics(t, g, pod)
	outs := make(chan string, len(branches)-1)
	for _, b := range branches[1:] {
		go func() {
			out, err := clone(b, b)
			if err != nil {
				out = fmt.Sprintf("clone of %s: %v\n%s", b, err, out)
			}
			outs <- out
		}()
	}
	waiting := "gitssh_ssh_upload_packs_waiting"
	g.Eventually(func(g Gomega) float64 { return c.metrics(t, g, pod)[waiting] }).
		WithTimeout(time.Minute).WithPolling(200*time.Millisecond).Should(Equal(float64(len(branches)-1)), "each clone's pack-objects run waits")
	g.Expect(stdin.Close()).To(Succeed())
	for range branches[1:] {
		g.Expect(<-outs).To(ContainSubstring("remote: gitssh: waiting for a turn: 1 clones and fetches of this repository are running"))
	}
	for _, b := range branches[1:] {
		g.Expect(strings.TrimSpace(alice.gitOK(t, filepath.Join(work, b), "rev-parse", "HEAD"))).To(Equal(heads[b]))
	}
	after := c.metrics(t, g, pod)
	g.Expect(after[waiting]).To(BeZero())
	miss := `gitssh_pack_cache_requests_total{result="miss"}`
	g.Expect(after[miss] - before[miss]).To(Equal(float64(len(branches) - 1)))
	timeouts := "gitssh_ssh_upload_pack_queue_timeouts_total"
	g.Expect(after[timeouts] - before[timeouts]).To(BeZero())
}

// commitFile commits a file of size random bytes named name in the work tree dir and
// returns the commit's id.
func commitFile(t *testing.T, u *user, dir, name string, size int) string {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
	u.gitOK(t, dir, "add", name)
	u.gitOK(t, dir, "commit", "-q", "-m", name)
	return strings.TrimSpace(u.gitOK(t, dir, "rev-parse", "HEAD"))
}

// metrics reads the pod's metrics endpoint through the API server's pod proxy (the image
// has no HTTP client) and returns the gitssh_ series by their text-format name, e.g.
// gitssh_pack_cache_requests_total{result="hit"}.
func (c *cluster) metrics(t *testing.T, g Gomega, pod string) map[string]float64 {
	t.Helper()
	out, err := c.kubectlErr(t, "get", "--raw", "/api/v1/namespaces/"+c.ns+"/pods/"+pod+":"+metricsPort+"/proxy/metrics")
	g.Expect(err).NotTo(HaveOccurred(), out)
	series := map[string]float64{}
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "gitssh_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		g.Expect(err).NotTo(HaveOccurred(), line)
		series[line[:i]] = v
	}
	return series
}
