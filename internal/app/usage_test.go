package app_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"golang.org/x/crypto/ssh"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/internal/app"
)

// A real git clone sets the key's lastUsedTime within a flush interval, kubectl shows it
// under LAST USED, and the project gets lastFetchTime, then lastPushTime after a push.
func TestUsageTimesAfterCloneAndPush(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.Namespace(t)
	inst := startGitssh(t, ns, t.TempDir())
	alice := newUserKey(t, "alice")
	key := createKey(t, ns, "alice-laptop", "alice", alice.publicKey)
	project := createProject(t, ns, "alice-api", gitsshv1alpha1.GitProjectSpec{Owner: "alice", Project: "api"})

	dir := filepath.Join(t.TempDir(), "api")
	g.Eventually(func() error { _, err := inst.git(alice, "", "clone", inst.url("alice", "api"), dir); return err }).
		WithTimeout(eventually).Should(Succeed())
	g.Eventually(func(g Gomega) {
		readyCondition(g, key)
		g.Expect(key.Status.LastUsedTime).NotTo(BeNil())
		g.Expect(key.Status.LastFailedTime).To(BeNil())
		readyCondition(g, project)
		g.Expect(project.Status.LastFetchTime).NotTo(BeNil())
		g.Expect(project.Status.LastPushTime).To(BeNil())
	}).WithTimeout(eventually).Should(Succeed())

	out, err := env.Kubectl(ctx, "get", "sshkey", "alice-laptop", "-n", ns)
	g.Expect(err).NotTo(HaveOccurred(), out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	lastUsed := strings.Index(lines[0], "LAST USED")
	g.Expect(lastUsed).To(BeNumerically(">", 0))
	g.Expect(lines[1][lastUsed:]).To(MatchRegexp(`^\d+s\s`), "LAST USED column: %s", out)

	g.Expect(os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)).To(Succeed())
	g.Expect(inst.git(alice, dir, "add", "f")).Error().NotTo(HaveOccurred())
	g.Expect(inst.git(alice, dir, "commit", "-m", "x")).Error().NotTo(HaveOccurred())
	out, err = inst.git(alice, dir, "push", "origin", "HEAD:main")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func(g Gomega) {
		readyCondition(g, project)
		g.Expect(project.Status.LastPushTime).NotTo(BeNil())
	}).WithTimeout(eventually).Should(Succeed())
}

// A registered key offered by a client that does not hold the private key sets
// lastFailedTime (with a Warning event), never lastUsedTime.
func TestKeyOfferedWithoutProofSetsLastFailedTime(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	inst := startGitssh(t, ns, t.TempDir())
	alice := newUserKey(t, "alice")
	key := createKey(t, ns, "alice-laptop", "alice", alice.publicKey)
	g.Eventually(func(g Gomega) { g.Expect(readyCondition(g, key).Reason).To(Equal(gitsshv1alpha1.ReasonKeyRegistered)) }).
		WithTimeout(eventually).Should(Succeed())

	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(alice.publicKey))
	g.Expect(err).NotTo(HaveOccurred())
	_, err = ssh.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(inst.port)), &ssh.ClientConfig{
		User:            "git",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(publicOnlySigner{pub})},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Timeout:         10 * time.Second,
	})
	g.Expect(err).To(HaveOccurred(), "a key without its private half logged in")

	g.Eventually(func(g Gomega) {
		readyCondition(g, key)
		g.Expect(key.Status.LastFailedTime).NotTo(BeNil())
	}).WithTimeout(eventually).Should(Succeed())
	g.Expect(key.Status.LastUsedTime).To(BeNil())
	g.Eventually(func() []string { return eventReasons(g, ns, key.Name) }).WithTimeout(eventually).Should(ContainElement("KeyRefused"))
}

// An expired key offered at login sets lastFailedTime, like any refused key, and as
// coalesced: a second refused login within the flush interval writes nothing.
func TestExpiredKeyOfferedSetsLastFailedTime(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	const interval = 10 * time.Second
	inst := startGitssh(t, ns, t.TempDir(), func(o *app.Options) { o.UsageFlushInterval = interval })
	createProject(t, ns, "alice-api", gitsshv1alpha1.GitProjectSpec{Owner: "alice", Project: "api"})
	old := newUserKey(t, "old")
	key := createExpiringKey(t, ns, "alice-old", "alice", old.publicKey, time.Now().Add(-time.Minute))
	g.Eventually(func(g Gomega) { g.Expect(readyCondition(g, key).Reason).To(Equal(gitsshv1alpha1.ReasonExpired)) }).
		WithTimeout(eventually).Should(Succeed())

	for range 2 {
		out, err := inst.git(old, "", "ls-remote", inst.url("alice", "api"))
		g.Expect(err).To(HaveOccurred(), "an expired key logged in: %s", out)
		g.Expect(out).To(ContainSubstring("Permission denied (publickey)"))
	}
	g.Eventually(func(g Gomega) {
		readyCondition(g, key)
		g.Expect(key.Status.LastFailedTime).NotTo(BeNil())
	}).WithTimeout(eventually + interval).Should(Succeed())
	g.Expect(key.Status.LastUsedTime).To(BeNil())
	g.Expect(inst.log.lines("Refused expired key", `"key": "`+ns+`/alice-old"`)).To(HaveLen(2), "one line per login")
	failed := key.Status.LastFailedTime.DeepCopy()
	g.Consistently(func(g Gomega) {
		readyCondition(g, key)
		g.Expect(key.Status.LastFailedTime.Equal(failed)).To(BeTrue(), "written again within the interval: %v", key.Status.LastFailedTime)
	}).WithTimeout(interval + time.Second).WithPolling(time.Second).Should(Succeed())
}

// publicOnlySigner holds a public key and no private key: it can offer the key (the query
// without a signature) but cannot prove it.
type publicOnlySigner struct{ key ssh.PublicKey }

func (s publicOnlySigner) PublicKey() ssh.PublicKey { return s.key }
func (s publicOnlySigner) Sign(io.Reader, []byte) (*ssh.Signature, error) {
	return nil, errors.New("no private key")
}
