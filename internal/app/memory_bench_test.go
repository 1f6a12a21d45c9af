package app_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/internal/testenv"
	. "github.com/onsi/gomega"
)

// BenchmarkScaleMemory runs the real gitssh binary (built from this tree, or
// $GITSSH_BENCH_BINARY, to compare a change before and after) against 10,000 SSHPublicKeys
// and 2,000 GitProjects, each applied server-side (so each carries managedFields) and
// carrying a last-applied-configuration annotation, as objects once applied with
// `kubectl apply` do. It reports the process's resident memory (VmRSS, and its peak
// VmHWM) and the Go heap in use once every status is written, which is what a pod's
// memory limit has to hold. GITSSH_BENCH_ENV adds environment variables to the process,
// e.g. "GOGC=50 GOMEMLIMIT=48MiB". GITSSH_BENCH_PROFILE_DIR keeps, per phase, the process's
// log and its heap profile taken after the sampling (go tool pprof -sample_index=inuse_space
// or alloc_space, the latter covering the initial sync). GITSSH_BENCH_SETTLED_HOOK is a shell
// command run with the process's PID and the phase as $1 and $2 once it has settled,
// before the sampling (e.g. to dump /proc/$1/smaps or drop its binary's pages).
//
//	KUBEBUILDER_ASSETS=$(hack/setup-envtest.sh) go test -run '^$' -bench ScaleMemory -benchtime 1x ./internal/app/
func BenchmarkScaleMemory(b *testing.B) {
	const keys, projects = 10000, 2000
	ns := env.Namespace(b)

	bin := os.Getenv("GITSSH_BENCH_BINARY")
	if bin == "" {
		bin = filepath.Join(b.TempDir(), "gitssh")
		// As the image builds it (Makefile's build target): static, so that no shared
		// library's pages count in the resident set.
		build := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
		build.Dir = env.RepoRoot
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			b.Fatalf("go build: %v\n%s", err, out)
		}
	}

	last := newGoKey(b) // the last key applied, so its login proves the whole list is loaded
	applyAll(b, ns, keys, projects, last)
	repoRoot := b.TempDir()
	profileDir := os.Getenv("GITSSH_BENCH_PROFILE_DIR")

	for range b.N {
		// The first start writes every status and creates every repository (and emits an
		// event for each object, which client-go keeps for a while); a restart finds them
		// written: what a replica or a restarted pod holds for as long as it runs.
		run := func(phase string) {
			sshPort, metricsPort, pprofPort := testenv.FreePort(b), testenv.FreePort(b), 0
			if profileDir != "" {
				pprofPort = testenv.FreePort(b)
			}
			cmd := exec.Command(bin,
				"--namespace", ns,
				"--ssh-addr", fmt.Sprintf("127.0.0.1:%d", sshPort),
				"--ssh-public-host", "127.0.0.1", "--ssh-public-port", strconv.Itoa(sshPort),
				"--repo-root", repoRoot,
				"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", metricsPort),
				"--health-probe-bind-address", "0",
				"--leader-election-id", "bench-"+ns,
			)
			if pprofPort != 0 {
				cmd.Args = append(cmd.Args, "--pprof-bind-address", fmt.Sprintf("127.0.0.1:%d", pprofPort))
			}
			cmd.Env = append(os.Environ(), "KUBECONFIG="+env.KubeconfigPath)
			cmd.Env = append(cmd.Env, strings.Fields(os.Getenv("GITSSH_BENCH_ENV"))...)
			logDir := profileDir
			if logDir == "" {
				logDir = b.TempDir()
			}
			logFile, err := os.Create(filepath.Join(logDir, phase+".log"))
			if err != nil {
				b.Fatal(err)
			}
			cmd.Stdout, cmd.Stderr = logFile, logFile
			start := time.Now()
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() {
				// SIGTERM: the next start must not wait for this one's Lease.
				_ = cmd.Process.Signal(syscall.SIGTERM)
				_ = cmd.Wait()
				if b.Failed() {
					log, _ := os.ReadFile(logFile.Name())
					b.Logf("gitssh log (%s):\n%s", phase, log)
				}
			}()

			waitFor(b, 3*time.Minute, func() bool { return login(sshPort, last) })
			b.ReportMetric(time.Since(start).Seconds(), phase+"-start-to-serving-s")
			waitProvisioned(b, ns)
			if phase == "first" {
				b.ReportMetric(time.Since(start).Seconds(), phase+"-start-to-all-statuses-s")
			}
			// A restart finds every status written but still reconciles every object; the
			// state a pod sits in is the one after its queues are drained. Housekeeping's
			// queue is left out: it runs git on each repository, one at a time, for minutes.
			waitEvery(b, time.Second, 10*time.Minute, func() bool { return queuesDrained(b, metricsPort, "housekeeping") })
			b.ReportMetric(time.Since(start).Seconds(), phase+"-start-to-settled-s")
			if hook := os.Getenv("GITSSH_BENCH_SETTLED_HOOK"); hook != "" {
				out, err := exec.Command("sh", "-c", hook, "hook", strconv.Itoa(cmd.Process.Pid), phase).CombinedOutput()
				b.Logf("settled hook: %v\n%s", err, out)
			}
			// Sample for 10 s after that.
			var rss, heap float64
			for i := range 10 {
				if i > 0 {
					time.Sleep(time.Second)
				}
				rss = max(rss, procStatusMiB(b, cmd.Process.Pid, "VmRSS"))
				heap = max(heap, metricMiB(b, metricsPort, "go_memstats_heap_inuse_bytes"))
			}
			b.ReportMetric(rss, phase+"-rss-MiB")
			// Anonymous memory: the resident set but for the binary's own pages, which the
			// kernel can drop and read again.
			b.ReportMetric(procStatusMiB(b, cmd.Process.Pid, "RssAnon"), phase+"-rss-anon-MiB")
			b.ReportMetric(procStatusMiB(b, cmd.Process.Pid, "VmHWM"), phase+"-peak-rss-MiB")
			b.ReportMetric(heap, phase+"-heap-inuse-MiB")
			// Logins one after another with every key loaded, as the memory settings leave
			// them: wall time and the process's CPU time per login.
			const logins = 200
			cpu, t := procCPUSeconds(b, cmd.Process.Pid), time.Now()
			for range logins {
				if !login(sshPort, last) {
					b.Fatal("login failed")
				}
			}
			b.ReportMetric(float64(time.Since(t).Microseconds())/1000/logins, phase+"-login-ms")
			b.ReportMetric((procCPUSeconds(b, cmd.Process.Pid)-cpu)*1000/logins, phase+"-server-cpu-ms/login")
			if pprofPort != 0 {
				save(b, fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap", pprofPort), filepath.Join(profileDir, phase+".heap.pb.gz"))
				save(b, fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort), filepath.Join(profileDir, phase+".metrics.txt"))
				status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
				smaps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", cmd.Process.Pid))
				_ = os.WriteFile(filepath.Join(profileDir, phase+".status.txt"), status, 0o644)
				_ = os.WriteFile(filepath.Join(profileDir, phase+".smaps.txt"), smaps, 0o644)
			}
		}
		run("first")
		run("restart")
	}
}

// applyAll applies keys SSHPublicKeys (the last one holding last's public key) and
// projects GitProjects to ns, server-side, 16 at a time.
func applyAll(b *testing.B, ns string, keys, projects int, last goKey) {
	ctx := context.Background()
	var wg sync.WaitGroup
	work := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range work {
				var spec map[string]any
				var kind, name string
				if i < keys {
					k := last
					if i != keys-1 {
						k = newGoKey(b)
					}
					kind, name = "SSHPublicKey", fmt.Sprintf("key-%05d", i)
					spec = map[string]any{"user": fmt.Sprintf("user-%d", i%500), "publicKey": k.publicKey,
						"description": fmt.Sprintf("key %d of user-%d", i, i%500)}
				} else {
					j := i - keys
					kind, name = "GitProject", fmt.Sprintf("project-%05d", j)
					spec = map[string]any{"owner": fmt.Sprintf("user-%d", j%500), "project": fmt.Sprintf("p%d", j),
						"members": []any{map[string]any{"user": fmt.Sprintf("user-%d", (j+1)%500), "role": "Write"}}}
				}
				if err := applyObject(ctx, ns, kind, name, spec); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for i := range keys + projects {
		work <- i
	}
	close(work)
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}

// applyObject applies one object server-side, with the annotation kubectl's client-side
// apply writes (the whole object as JSON), which many objects applied before
// `kubectl apply --server-side` still carry.
func applyObject(ctx context.Context, ns, kind, name string, spec map[string]any) error {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gitsshv1alpha1.GroupVersion.String(),
		"kind":       kind,
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec":       spec,
	}}
	lastApplied, err := u.MarshalJSON()
	if err != nil {
		return err
	}
	u.SetAnnotations(map[string]string{"kubectl.kubernetes.io/last-applied-configuration": string(lastApplied)})
	return env.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("kubectl"))
}

// waitProvisioned waits until the leader has written every key's status and every
// project's clone URL.
func waitProvisioned(b *testing.B, ns string) {
	waitEvery(b, 2*time.Second, 15*time.Minute, func() bool { return provisioned(ns) })
}

// provisioned says whether every key in ns has a status and every project a clone URL.
func provisioned(ns string) bool {
	ctx := context.Background()
	var keyList gitsshv1alpha1.SSHPublicKeyList
	var projectList gitsshv1alpha1.GitProjectList
	if env.Client.List(ctx, &keyList, client.InNamespace(ns)) != nil || env.Client.List(ctx, &projectList, client.InNamespace(ns)) != nil {
		return false
	}
	for _, k := range keyList.Items {
		if k.Status.ObservedGeneration == 0 {
			return false
		}
	}
	for _, p := range projectList.Items {
		if p.Status.CloneURL == "" {
			return false
		}
	}
	return true
}

// procStatusMiB reads a "Vm…: N kB" or "Rss…: N kB" line of /proc/PID/status, in MiB.
func procStatusMiB(b *testing.B, pid int, field string) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// procCPUSeconds is the user and system CPU time the process has used.
func procCPUSeconds(b *testing.B, pid int) float64 {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name (which may hold spaces), from the 3rd: utime and
	// stime are the 14th and 15th, in clock ticks (100 per second on Linux).
	_, rest, _ := strings.Cut(string(stat), ") ")
	fields := strings.Fields(rest)
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100
}

// save writes what url serves to path.
func save(b *testing.B, url, path string) {
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		b.Fatal(err)
	}
}

// queuesDrained reports whether every controller's workqueue but those named in except is
// empty, by the process's workqueue_depth metrics.
func queuesDrained(b *testing.B, port int, except ...string) bool {
	depths := scrape(NewWithT(b), fmt.Sprintf("http://127.0.0.1:%d/metrics", port), "workqueue_depth{")
	for series, depth := range depths {
		if depth != 0 && !slices.ContainsFunc(except, func(name string) bool { return strings.Contains(series, `name="`+name+`"`) }) {
			return false
		}
	}
	return len(depths) > 0
}

// metricMiB reads one unlabelled gauge from the process's /metrics, in MiB.
func metricMiB(b *testing.B, port int, name string) float64 {
	v, ok := scrape(NewWithT(b), fmt.Sprintf("http://127.0.0.1:%d/metrics", port), name+" ")[name]
	if !ok {
		b.Fatalf("no %s in /metrics", name)
	}
	return v / (1 << 20)
}
