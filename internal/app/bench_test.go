package app_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/internal/app"
	"github.com/gitssh-dev/gitssh/sshserver"
)

// These benchmarks measure the operator's propagation latency and its behaviour at scale
// against the real API server. Run them with:
//
//	KUBEBUILDER_ASSETS=$(hack/setup-envtest.sh) go test -run '^$' -bench . -benchtime 1x ./internal/app/

type goKey struct {
	signer    ssh.Signer
	publicKey string
}

func newGoKey(b testing.TB) goKey {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		b.Fatal(err)
	}
	return goKey{signer: signer, publicKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))}
}

// login reports whether key logs in (the SSH handshake with public-key auth succeeds).
func login(port int, key goKey) bool {
	conn, err := ssh.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), &ssh.ClientConfig{
		User:            "git",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(key.signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), // benchmark on loopback; host keys are tested elsewhere
		Timeout:         5 * time.Second,
	})
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}

func waitFor(b *testing.B, timeout time.Duration, cond func() bool) time.Duration {
	return waitEvery(b, 2*time.Millisecond, timeout, cond)
}

// waitEvery polls cond every interval; slow enough for conditions that list thousands of
// objects, which would otherwise load the API server they measure.
func waitEvery(b *testing.B, interval, timeout time.Duration, cond func() bool) time.Duration {
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			b.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(interval)
	}
	return time.Since(start)
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

// BenchmarkKeyPropagation: from `kubectl apply` of a key to its first successful login,
// and from `kubectl delete` to its first refusal, over 50 keys.
func BenchmarkKeyPropagation(b *testing.B) {
	ctx := context.Background()
	ns := env.Namespace(b)
	inst := startGitssh(b, ns, b.TempDir(), noPenalties)
	const tries = 50
	var usable, refused []time.Duration
	for range b.N {
		for i := range tries {
			key := newGoKey(b)
			obj := &gitsshv1alpha1.SSHPublicKey{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("k%d", i), Namespace: ns},
				Spec:       gitsshv1alpha1.SSHPublicKeySpec{User: "bench", PublicKey: key.publicKey},
			}
			if err := env.Client.Create(ctx, obj); err != nil {
				b.Fatal(err)
			}
			usable = append(usable, waitFor(b, 20*time.Second, func() bool { return login(inst.port, key) }))
			if err := env.Client.Delete(ctx, obj); err != nil {
				b.Fatal(err)
			}
			refused = append(refused, waitFor(b, 20*time.Second, func() bool { return !login(inst.port, key) }))
		}
	}
	b.ReportMetric(float64(percentile(usable, 0.5).Milliseconds()), "create-to-usable-p50-ms")
	b.ReportMetric(float64(percentile(usable, 0.99).Milliseconds()), "create-to-usable-p99-ms")
	b.ReportMetric(float64(percentile(refused, 0.5).Milliseconds()), "delete-to-refused-p50-ms")
	b.ReportMetric(float64(percentile(refused, 0.99).Milliseconds()), "delete-to-refused-p99-ms")
}

// BenchmarkScale: 10,000 keys and 2,000 projects. Reports the time from start to serving
// (caches synced and the authorizer filled), the heap growth, and the median login time
// compared with a namespace holding one key.
func BenchmarkScale(b *testing.B) {
	const keys, projects = 10000, 2000
	ctx := context.Background()

	small := env.Namespace(b)
	smallKey := newGoKey(b)
	createKey(b, small, "only", "bench", smallKey.publicKey)
	smallInst := startGitssh(b, small, b.TempDir(), noPenalties)
	waitFor(b, 20*time.Second, func() bool { return login(smallInst.port, smallKey) })
	smallLogin := medianLogin(b, smallInst.port, smallKey)
	_ = smallInst.stop()

	ns := env.Namespace(b)
	last := newGoKey(b) // the last key created, so its login proves the whole list is loaded
	var wg sync.WaitGroup
	work := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range work {
				if i < keys {
					k := newGoKey(b)
					if i == keys-1 {
						k = last
					}
					o := &gitsshv1alpha1.SSHPublicKey{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("key-%05d", i), Namespace: ns},
						Spec: gitsshv1alpha1.SSHPublicKeySpec{User: fmt.Sprintf("user-%d", i%500), PublicKey: k.publicKey}}
					if err := env.Client.Create(ctx, o); err != nil {
						b.Error(err)
					}
				} else {
					j := i - keys
					o := &gitsshv1alpha1.GitProject{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("project-%05d", j), Namespace: ns},
						Spec: gitsshv1alpha1.GitProjectSpec{Owner: fmt.Sprintf("user-%d", j%500), Project: fmt.Sprintf("p%d", j)}}
					if err := env.Client.Create(ctx, o); err != nil {
						b.Error(err)
					}
				}
			}
		})
	}
	for i := range keys + projects {
		work <- i
	}
	close(work)
	wg.Wait()

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	inst := startGitssh(b, ns, b.TempDir(), noPenalties)
	waitFor(b, 120*time.Second, func() bool { return login(inst.port, last) })
	synced := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)

	// Let the leader finish writing 12,000 statuses and creating 2,000 repositories, so
	// that the login time below is not measured against that burst.
	provisioning := waitEvery(b, time.Second, 10*time.Minute, func() bool { return provisioned(ns) })
	bigLogin := medianLogin(b, inst.port, last)
	b.ReportMetric((synced + provisioning).Seconds(), "start-to-all-statuses-s")

	b.ReportMetric(synced.Seconds(), "start-to-serving-s")
	b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/(1<<20), "heap-growth-MiB")
	b.ReportMetric(float64(smallLogin.Microseconds())/1000, "login-1-key-ms")
	b.ReportMetric(float64(bigLogin.Microseconds())/1000, "login-10000-keys-ms")
}

// noPenalties turns per-source penalties off: the benchmarks poll with a key until it
// logs in (or until it is refused), and every refusal would count against 127.0.0.1,
// which is soon refused for 15 s.
func noPenalties(o *app.Options) { o.SSH.PerSourcePenalties = sshserver.Penalties{Off: true} }

func medianLogin(b *testing.B, port int, key goKey) time.Duration {
	var times []time.Duration
	for range 51 {
		start := time.Now()
		if !login(port, key) {
			b.Fatal("login failed")
		}
		times = append(times, time.Since(start))
	}
	return percentile(times, 0.5)
}
