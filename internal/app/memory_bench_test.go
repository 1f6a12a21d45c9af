package app_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
)

// BenchmarkScaleMemory runs the real gitssh binary (built from this tree, or
// $GITSSH_BENCH_BINARY, to compare a change before and after) against 10,000 SSHPublicKeys
// and 2,000 GitProjects, each applied server-side (so each carries managedFields) and
// carrying a last-applied-configuration annotation, as objects once applied with
// `kubectl apply` do. It reports the process's resident memory (VmRSS, and its peak
// VmHWM) and the Go heap in use once every status is written, which is what a pod's
// memory limit has to hold. GITSSH_BENCH_ENV adds environment variables to the process,
// e.g. "GOGC=50 GOMEMLIMIT=48MiB".
//
//	KUBEBUILDER_ASSETS=$(hack/setup-envtest.sh) go test -run '^$' -bench ScaleMemory -benchtime 1x ./internal/app/
func BenchmarkScaleMemory(b *testing.B) {
	const keys, projects = 10000, 2000
	ns := env.Namespace(b)

	bin := os.Getenv("GITSSH_BENCH_BINARY")
	if bin == "" {
		bin = filepath.Join(b.TempDir(), "gitssh")
		build := exec.Command("go", "build", "-o", bin, ".")
		build.Dir = env.RepoRoot
		if out, err := build.CombinedOutput(); err != nil {
			b.Fatalf("go build: %v\n%s", err, out)
		}
	}

	last := newGoKey(b) // the last key applied, so its login proves the whole list is loaded
	applyAll(b, ns, keys, projects, last)
	repoRoot := b.TempDir()

	for range b.N {
		// The first start writes every status and creates every repository (and emits an
		// event for each object, which client-go keeps for a while); a restart finds them
		// written: what a replica or a restarted pod holds for as long as it runs.
		run := func(phase string) {
			stopRunning := func() {}
			defer func() { stopRunning() }()
			var cmd *exec.Cmd
			var sshPort, metricsPort int
			var start time.Time
			testenv.RetryOnAddrInUse(b, func() error {
				sshPort, metricsPort = testenv.FreePort(b), testenv.FreePort(b)
				cmd = exec.Command(bin,
					"--namespace", ns,
					"--ssh-addr", fmt.Sprintf("127.0.0.1:%d", sshPort),
					"--ssh-public-host", "127.0.0.1", "--ssh-public-port", strconv.Itoa(sshPort),
					"--repo-root", repoRoot,
					"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", metricsPort),
					"--health-probe-bind-address", "0",
					"--leader-election-id", "bench-"+ns,
				)
				cmd.Env = append(os.Environ(), "KUBECONFIG="+env.KubeconfigPath)
				cmd.Env = append(cmd.Env, strings.Fields(os.Getenv("GITSSH_BENCH_ENV"))...)
				logFile, err := os.Create(filepath.Join(b.TempDir(), "gitssh.log"))
				if err != nil {
					b.Fatal(err)
				}
				cmd.Stdout, cmd.Stderr = logFile, logFile
				start = time.Now()
				if err := cmd.Start(); err != nil {
					b.Fatal(err)
				}
				exited := make(chan error, 1)
				go func() { exited <- cmd.Wait() }()
				stopped := false
				stop := func() {
					if !stopped {
						stopped = true
						// SIGTERM: the next start must not wait for this one's Lease.
						_ = cmd.Process.Signal(syscall.SIGTERM)
						<-exited
					}
					if b.Failed() {
						log, _ := os.ReadFile(logFile.Name())
						b.Logf("gitssh log (%s):\n%s", phase, log)
					}
				}
				stopRunning = stop
				var exitErr error
				waitFor(b, 3*time.Minute, func() bool {
					select {
					case err := <-exited:
						stopped = true
						log, _ := os.ReadFile(logFile.Name())
						exitErr = fmt.Errorf("gitssh exited (%v):\n%s", err, log)
						return true
					default:
						return login(sshPort, last)
					}
				})
				return exitErr
			})
			b.ReportMetric(time.Since(start).Seconds(), phase+"-start-to-serving-s")
			waitProvisioned(b, ns)
			if phase == "first" {
				b.ReportMetric(time.Since(start).Seconds(), phase+"-start-to-all-statuses-s")
			}
			// Sample for 10 s after the statuses are written: the state a pod sits in.
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
	ctx := context.Background()
	waitEvery(b, 2*time.Second, 15*time.Minute, func() bool {
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
	})
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

// metricMiB reads one unlabelled gauge from the process's /metrics, in MiB.
func metricMiB(b *testing.B, port int, name string) float64 {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			return f / (1 << 20)
		}
	}
	b.Fatalf("no %s in /metrics", name)
	return 0
}
