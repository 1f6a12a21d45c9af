package usage_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/ssh"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/internal/authorizer"
	"github.com/gitssh-dev/gitssh/internal/hostkeys"
	"github.com/gitssh-dev/gitssh/internal/testenv"
	"github.com/gitssh-dev/gitssh/internal/usage"
	"github.com/gitssh-dev/gitssh/sshserver"
)

var env *testenv.Environment

func TestMain(m *testing.M) {
	os.Exit(testenv.Run(m, &env))
}

// countingClient counts the status patches it sends.
type countingClient struct {
	client.Client
	patches atomic.Int64
}

func (c *countingClient) Status() client.SubResourceWriter {
	return countingWriter{c.Client.Status(), &c.patches}
}

type countingWriter struct {
	client.SubResourceWriter
	patches *atomic.Int64
}

func (w countingWriter) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	w.patches.Add(1)
	return w.SubResourceWriter.Patch(ctx, obj, patch, opts...)
}

type keyPair struct {
	signer ssh.Signer
	object *gitsshv1alpha1.SSHPublicKey
}

// createKeys makes n keys in ns, in the API and in authz.
func createKeys(t testing.TB, ns string, n int, authz *authorizer.Authorizer) []keyPair {
	g := NewWithT(t)
	var keys []keyPair
	for i := range n {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		g.Expect(err).NotTo(HaveOccurred())
		signer, err := ssh.NewSignerFromKey(priv)
		g.Expect(err).NotTo(HaveOccurred())
		obj := &gitsshv1alpha1.SSHPublicKey{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("key-%d", i), Namespace: ns},
			Spec: gitsshv1alpha1.SSHPublicKeySpec{User: fmt.Sprintf("user-%d", i),
				PublicKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))},
		}
		g.Expect(env.Client.Create(context.Background(), obj)).To(Succeed())
		authz.SetKey(authorizer.ObjectRef{Namespace: ns, Name: obj.Name}, authorizer.Key{
			Fingerprint: ssh.FingerprintSHA256(signer.PublicKey()), User: obj.Spec.User, Created: obj.CreationTimestamp.Time,
		})
		keys = append(keys, keyPair{signer, obj})
	}
	return keys
}

// serve runs the real SSH server with rec on 127.0.0.1 and returns its address.
func serve(t testing.TB, authz *authorizer.Authorizer, rec sshserver.Recorder) string {
	g := NewWithT(t)
	pems, err := hostkeys.Generate()
	g.Expect(err).NotTo(HaveOccurred())
	signers, err := hostkeys.Load(pems)
	g.Expect(err).NotTo(HaveOccurred())
	server, err := sshserver.New(sshserver.Config{MaxConns: 4096, MaxStartups: sshserver.MaxStartups{Start: 4096, Rate: 100, Full: 4096}, MaxStartupsPerSource: -1}, signers, authz, rec, logr.Discard())
	g.Expect(err).NotTo(HaveOccurred())
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = server.Shutdown(ctx)
	})
	return listener.Addr().String()
}

func login(addr string, signer ssh.Signer) error {
	conn, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{
		User: "git", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), // host keys are tested elsewhere
		Timeout:         10 * time.Second,
	})
	if err != nil {
		return err
	}
	return conn.Close()
}

func newRecorder(c client.Client, interval time.Duration) *usage.Recorder {
	return &usage.Recorder{Client: c, Reader: env.Client, APIReader: env.Client, Interval: interval, Log: logr.Discard()}
}

// 2,000 real SSH logins by 10 keys within one interval cost at most 10 status patches, and
// each key's lastUsedTime is written.
func TestLoginsAreCoalesced(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	authz := authorizer.New()
	keys := createKeys(t, ns, 10, authz)
	counting := &countingClient{Client: env.Client}
	rec := newRecorder(counting, time.Hour) // one flush, by hand, after all the logins
	addr := serve(t, authz, rec)

	start := time.Now()
	var wg sync.WaitGroup
	var failures atomic.Int64
	for worker := range 10 {
		wg.Go(func() {
			for i := range 200 {
				if err := login(addr, keys[(worker+i)%len(keys)].signer); err != nil {
					failures.Add(1)
				}
			}
		})
	}
	wg.Wait()
	g.Expect(failures.Load()).To(BeZero())

	g.Expect(rec.Flush(context.Background())).To(BeZero())
	g.Expect(counting.patches.Load()).To(BeNumerically("<=", 10))
	for _, key := range keys {
		var stored gitsshv1alpha1.SSHPublicKey
		g.Expect(env.Client.Get(context.Background(), client.ObjectKeyFromObject(key.object), &stored)).To(Succeed())
		g.Expect(stored.Status.LastUsedTime).NotTo(BeNil(), key.object.Name)
		g.Expect(stored.Status.LastUsedTime.Time).To(BeTemporally(">=", start.Truncate(time.Second)))
		g.Expect(stored.Status.LastFailedTime).To(BeNil())
	}

	// More logins within the interval write nothing more.
	g.Expect(login(addr, keys[0].signer)).To(Succeed())
	before := counting.patches.Load()
	g.Expect(rec.Flush(context.Background())).To(BeZero())
	g.Expect(counting.patches.Load()).To(Equal(before))
}

// Two recorders (two replicas) racing on one object: the one with the older time, reading
// a stale copy, never lowers the newer time the other wrote.
func TestTimesNeverMoveBackwards(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.Namespace(t)
	keys := createKeys(t, ns, 1, authorizer.New())
	id := authorizer.Identity{User: "user-0", Key: authorizer.ObjectRef{Namespace: ns, Name: keys[0].object.Name}}
	older, newer := time.Now().Add(-time.Hour).Truncate(time.Second), time.Now().Truncate(time.Second)

	// Replica B read the object before replica A wrote, and keeps reading that copy.
	var stale gitsshv1alpha1.SSHPublicKey
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(keys[0].object), &stale)).To(Succeed())

	a := newRecorder(env.Client, time.Minute)
	a.Now = func() time.Time { return newer }
	a.LoginSucceeded(id)
	g.Expect(a.Flush(ctx)).To(BeZero())

	b := newRecorder(env.Client, time.Minute)
	b.Reader = staleReader{&stale}
	b.Now = func() time.Time { return older }
	b.LoginSucceeded(id)
	g.Expect(b.Flush(ctx)).To(BeZero())

	var stored gitsshv1alpha1.SSHPublicKey
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(keys[0].object), &stored)).To(Succeed())
	g.Expect(stored.Status.LastUsedTime.Time).To(BeTemporally("==", newer))

	// And a time less than one interval later is not written: the granularity is the interval.
	c := newRecorder(env.Client, time.Minute)
	c.Now = func() time.Time { return newer.Add(30 * time.Second) }
	c.LoginSucceeded(id)
	g.Expect(c.Flush(ctx)).To(BeZero())
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(keys[0].object), &stored)).To(Succeed())
	g.Expect(stored.Status.LastUsedTime.Time).To(BeTemporally("==", newer))
}

type staleReader struct{ key *gitsshv1alpha1.SSHPublicKey }

func (r staleReader) Get(_ context.Context, _ types.NamespacedName, obj client.Object, _ ...client.GetOption) error {
	r.key.DeepCopyInto(obj.(*gitsshv1alpha1.SSHPublicKey))
	return nil
}

func (r staleReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return fmt.Errorf("not used")
}

// With the API server unreachable, logins still succeed, the latest time waits in memory,
// and it is written once the API server is back. A deleted object is dropped quietly.
func TestAPIServerAway(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := env.Namespace(t)
	authz := authorizer.New()
	keys := createKeys(t, ns, 2, authz)

	proxy := newProxy(t, env.Config.Host)
	cfg := rest.CopyConfig(env.Config)
	cfg.Host = "https://" + proxy.addr
	cfg.Timeout = 2 * time.Second
	viaProxy, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	g.Expect(err).NotTo(HaveOccurred())
	rec := &usage.Recorder{Client: viaProxy, Reader: viaProxy, APIReader: viaProxy, Interval: 200 * time.Millisecond, Log: logr.Discard()}
	go func() { _ = rec.Start(ctx) }()
	addr := serve(t, authz, rec)

	proxy.down()
	for range 20 {
		g.Expect(login(addr, keys[0].signer)).To(Succeed(), "a login waited on the API server")
	}
	g.Expect(login(addr, keys[1].signer)).To(Succeed())
	g.Expect(env.Client.Delete(ctx, keys[1].object)).To(Succeed())
	time.Sleep(time.Second) // let a few flushes fail while the API server is away
	var stored gitsshv1alpha1.SSHPublicKey
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(keys[0].object), &stored)).To(Succeed())
	g.Expect(stored.Status.LastUsedTime).To(BeNil())

	proxy.up()
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(keys[0].object), &stored)).To(Succeed())
		g.Expect(stored.Status.LastUsedTime).NotTo(BeNil())
	}).WithTimeout(20 * time.Second).Should(Succeed())
}

// tcpProxy forwards to the API server and can be cut (connections reset, new ones
// refused) and restored on the same address.
type tcpProxy struct {
	t        *testing.T
	addr     string
	target   string
	mu       sync.Mutex
	listener net.Listener
	conns    []net.Conn
}

func newProxy(t *testing.T, apiServerURL string) *tcpProxy {
	target := strings.TrimPrefix(strings.TrimSuffix(apiServerURL, "/"), "https://")
	p := &tcpProxy{t: t, target: target}
	p.listen("127.0.0.1:0")
	t.Cleanup(p.down)
	return p
}

func (p *tcpProxy) listen(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		p.t.Fatalf("proxy: %v", err)
	}
	p.mu.Lock()
	p.listener, p.addr = l, l.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", p.target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
}

func (p *tcpProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.listener != nil {
		p.listener.Close()
		p.listener = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *tcpProxy) up() { p.listen(p.addr) }

// A certificate login has no object to write: it is counted by CA, and nothing is patched.
func TestCertificateLoginsAreCounted(t *testing.T) {
	g := NewWithT(t)
	c := &countingClient{Client: env.Client}
	rec := newRecorder(c, time.Second)
	id := authorizer.Identity{User: "alice", Fingerprint: "SHA256:certified-key", CA: "SHA256:test-ca"}
	rec.LoginSucceeded(id)
	rec.LoginSucceeded(id)
	rec.KeyRefused(id)
	g.Expect(rec.Flush(t.Context())).To(BeZero())
	g.Expect(c.patches.Load()).To(BeZero())
	g.Expect(testutil.GatherAndCompare(metrics.Registry, strings.NewReader(`
# HELP gitssh_certificate_logins_total Logins with a user certificate, by the SHA256 fingerprint of the CA that signed it.
# TYPE gitssh_certificate_logins_total counter
gitssh_certificate_logins_total{ca="SHA256:test-ca"} 2
`), "gitssh_certificate_logins_total")).To(Succeed())
}
