package app_test

import (
	"context"
	"maps"
	"os"
	"os/exec"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/controllers"
	"github.com/gitssh-dev/gitssh/internal/app"
	"github.com/gitssh-dev/gitssh/sshserver"
)

const caConfigMap = "gitssh-user-cas"

// certificateAuthority is a CA key pair made with the real ssh-keygen.
type certificateAuthority struct {
	path        string // private key
	publicKey   string
	fingerprint string
}

func newCA(t testing.TB, name string) certificateAuthority {
	t.Helper()
	key := newUserKey(t, name)
	out, err := exec.Command("ssh-keygen", "-l", "-E", "sha256", "-f", key.path+".pub").Output()
	if err != nil {
		t.Fatalf("ssh-keygen -l: %v", err)
	}
	return certificateAuthority{path: key.path, publicKey: key.publicKey, fingerprint: strings.Fields(string(out))[1]}
}

// certifiedKey makes a new user key and signs it with ca: ssh-keygen -s CA -I id ARGS
// key.pub. The ssh client offers KEY-cert.pub next to the key it is given.
func (ca certificateAuthority) certifiedKey(t testing.TB, id string, args ...string) userKey {
	t.Helper()
	key := newUserKey(t, "user")
	sign := append(append([]string{"-q", "-s", ca.path, "-I", id}, args...), key.path+".pub")
	if out, err := exec.Command("ssh-keygen", sign...).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen %s: %v: %s", strings.Join(sign, " "), err, out)
	}
	if _, err := os.Stat(key.path + "-cert.pub"); err != nil {
		t.Fatal(err)
	}
	return key
}

// setTrustedCAs creates or replaces the CA ConfigMap.
func setTrustedCAs(t testing.TB, ns string, revoked string, cas ...certificateAuthority) {
	t.Helper()
	var lines []string
	for _, ca := range cas {
		lines = append(lines, ca.publicKey)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: caConfigMap}, Data: map[string]string{
		controllers.TrustedUserCAKeysKey:   strings.Join(lines, "\n") + "\n",
		controllers.RevokedCertificatesKey: revoked,
	}}
	ctx := context.Background()
	err := env.Client.Update(ctx, cm)
	if err != nil {
		err = env.Client.Create(ctx, cm)
	}
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
}

// withTrustedCAs trusts the CAs of the ConfigMap caConfigMap. Penalties are off: every
// refused certificate of these tests comes from 127.0.0.1, which they would soon refuse.
func withTrustedCAs(o *app.Options) {
	o.TrustedUserCAKeys = caConfigMap
	o.SSH.PerSourcePenalties = sshserver.Penalties{Off: true}
}

// OpenSSH user certificates made by the real ssh-keygen, used by the real ssh and git: a
// certificate logs in as its principal when every check passes, and is refused, with a log
// line saying why, when one does not.
func TestUserCertificates(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	trusted, untrusted := newCA(t, "ca"), newCA(t, "other-ca")
	setTrustedCAs(t, ns, "# revoked by the security team\nserial: 42\nid: stolen-laptop\n", trusted)
	inst := startGitssh(t, ns, t.TempDir(), withTrustedCAs)
	createProject(t, ns, "alice-api", gitsshv1alpha1.GitProjectSpec{Owner: "alice", Project: "api"})
	g.Eventually(func(g Gomega) {
		g.Expect(readyCondition(g, &gitsshv1alpha1.GitProject{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alice-api"}}).Status).
			To(Equal(metav1.ConditionTrue))
	}).WithTimeout(eventually).Should(Succeed())

	// Alice pushes a first commit with her certificate.
	alice := trusted.certifiedKey(t, "alice@laptop", "-n", "alice", "-V", "-5m:+1h", "-z", "7", "-O", "source-address=127.0.0.1/32,::1")
	work := t.TempDir()
	for _, args := range [][]string{
		{"init", "-q", "-b", "main", work},
		{"-C", work, "commit", "-q", "--allow-empty", "-m", "first"},
		{"-C", work, "push", "-q", inst.url("alice", "api"), "main"},
	} {
		out, err := inst.git(alice, "", args...)
		g.Expect(err).NotTo(HaveOccurred(), "git %s: %s", strings.Join(args, " "), out)
	}
	g.Expect(inst.log.lines("Accepted certificate", `"alice@laptop"`, `"serial": 7`, trusted.fingerprint)).NotTo(BeEmpty())
	g.Expect(counter(t, "gitssh_certificate_logins_total", map[string]string{"ca": trusted.fingerprint})).
		To(BeNumerically(">=", 1), "gitssh_certificate_logins_total")

	refusedBefore, weakBefore := authAttempts(t, "certificate_refused"), authAttempts(t, "weak_key")
	refusals := 0
	for _, tt := range []struct {
		name string
		ca   certificateAuthority
		args []string // ssh-keygen -s options
		// reason is in the "Refused certificate" log line; empty: the login succeeds.
		reason string
		// wantOut is in the output of git ls-remote alice/api.
		wantOut string
	}{
		{name: "principal is another user", ca: trusted, args: []string{"-n", "bob"},
			wantOut: `repository "alice/api" not found or access denied`},
		{name: "no principal", ca: trusted, args: []string{},
			reason: "it names 0 principals"},
		{name: "several principals", ca: trusted, args: []string{"-n", "alice,bob"},
			reason: "it names 2 principals"},
		{name: "principal is not a user name", ca: trusted, args: []string{"-n", "Alice@example.com"},
			reason: "is not a gitssh user name"},
		{name: "expired", ca: trusted, args: []string{"-n", "alice", "-V", "-2h:-1h"},
			reason: "it expired at"},
		{name: "not yet valid", ca: trusted, args: []string{"-n", "alice", "-V", "+1h:+2h"},
			reason: "it is not valid before"},
		{name: "untrusted CA", ca: untrusted, args: []string{"-n", "alice"},
			reason: "its CA " + untrusted.fingerprint + " is not trusted"},
		{name: "unsupported critical option", ca: trusted, args: []string{"-n", "alice", "-O", "critical:restrict-to@example.com=x"},
			reason: `unsupported critical option "restrict-to@example.com"`},
		{name: "verify-required", ca: trusted, args: []string{"-n", "alice", "-O", "verify-required"},
			reason: `unsupported critical option "verify-required"`},
		{name: "force-command that is not git", ca: trusted, args: []string{"-n", "alice", "-O", "force-command=/bin/sh -c id"},
			reason: `its force-command "/bin/sh -c id" is not a git command`},
		{name: "source-address elsewhere", ca: trusted, args: []string{"-n", "alice", "-O", "source-address=192.0.2.0/24"},
			reason: `the client address 127.0.0.1 is not in its source-address "192.0.2.0/24"`},
		{name: "revoked serial", ca: trusted, args: []string{"-n", "alice", "-z", "42"},
			reason: "its serial 42 is revoked"},
		{name: "revoked key ID", ca: trusted, args: []string{"-n", "alice", "-z", "43"},
			reason: `its key ID "stolen-laptop" is revoked`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			id := strings.ReplaceAll(tt.name, " ", "-")
			if tt.name == "revoked key ID" {
				id = "stolen-laptop"
			}
			key := tt.ca.certifiedKey(t, id, tt.args...)
			out, err := inst.git(key, "", "ls-remote", inst.url("alice", "api"))
			if tt.reason != "" {
				refusals++
				g.Expect(err).To(HaveOccurred(), out)
				g.Expect(out).To(ContainSubstring("Permission denied (publickey)"))
				// Log values are JSON: quotes in them are escaped.
				reason := strings.ReplaceAll(tt.reason, `"`, `\"`)
				g.Expect(inst.log.lines("Refused certificate", `"`+id+`"`, reason)).NotTo(BeEmpty(),
					"no log line says why: %q", inst.log.lines(`"`+id+`"`))
				return
			}
			g.Expect(out).To(ContainSubstring(tt.wantOut))
		})
	}

	// Each refusal counts in the SSH metrics as certificate_refused, none as a weak key.
	g.Expect(authAttempts(t, "certificate_refused") - refusedBefore).To(BeNumerically(">=", refusals))
	g.Expect(authAttempts(t, "weak_key") - weakBefore).To(BeZero())

	t.Run("a forced git command runs instead of the one asked", func(t *testing.T) {
		g := NewWithT(t)
		reader := trusted.certifiedKey(t, "ci-reader", "-n", "alice", "-O", "force-command=git-upload-pack 'alice/api'")
		out, err := inst.git(reader, "", "ls-remote", inst.url("alice", "api"))
		g.Expect(err).NotTo(HaveOccurred(), out)
		g.Expect(out).To(ContainSubstring("refs/heads/main"))
		// A push gets upload-pack, which a pushing git cannot talk to: the certificate's
		// owner may write, the certificate may only read.
		out, err = inst.git(reader, "", "-C", work, "push", inst.url("alice", "api"), "main:other")
		g.Expect(err).To(HaveOccurred(), out)
		g.Expect(inst.log.lines("force-command instead of the command asked", "git-receive-pack")).NotTo(BeEmpty())
		out, _ = inst.git(alice, "", "ls-remote", inst.url("alice", "api"))
		g.Expect(out).NotTo(ContainSubstring("refs/heads/other"))
	})

	t.Run("a certificate is no SSHPublicKey", func(t *testing.T) {
		g := NewWithT(t)
		cert, err := os.ReadFile(alice.path + "-cert.pub")
		g.Expect(err).NotTo(HaveOccurred())
		key := createKey(t, ns, "alice-cert", "alice", strings.TrimSpace(string(cert)))
		g.Eventually(func(g Gomega) {
			ready := readyCondition(g, key)
			g.Expect(ready.Reason).To(Equal(gitsshv1alpha1.ReasonInvalidKey))
			g.Expect(ready.Message).To(ContainSubstring("is an SSH certificate"))
		}).WithTimeout(eventually).Should(Succeed())
	})
}

// The CA ConfigMap is watched: a CA added logs in without a restart, one removed stops
// logging in, and a ConfigMap that does not parse or is deleted trusts no CA.
func TestUserCertificateCAsReload(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	first, second := newCA(t, "first-ca"), newCA(t, "second-ca")
	createProject(t, ns, "alice-api", gitsshv1alpha1.GitProjectSpec{Owner: "alice", Project: "api"})
	// Started before the ConfigMap exists: certificates are refused, keys would work.
	inst := startGitssh(t, ns, t.TempDir(), withTrustedCAs)
	byFirst := first.certifiedKey(t, "by-first", "-n", "alice")
	bySecond := second.certifiedKey(t, "by-second", "-n", "alice")
	logsIn := func(key userKey) func() error {
		return func() error { _, err := inst.git(key, "", "ls-remote", inst.url("alice", "api")); return err }
	}
	g.Eventually(func(g Gomega) {
		g.Expect(readyCondition(g, &gitsshv1alpha1.GitProject{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alice-api"}}).Status).
			To(Equal(metav1.ConditionTrue))
	}).WithTimeout(eventually).Should(Succeed())
	g.Expect(logsIn(byFirst)()).To(HaveOccurred(), "no CA is trusted yet")

	setTrustedCAs(t, ns, "", first)
	g.Eventually(logsIn(byFirst)).WithTimeout(eventually).Should(Succeed(), "a CA added is trusted without a restart")
	g.Expect(logsIn(bySecond)()).To(HaveOccurred())

	setTrustedCAs(t, ns, "", first, second)
	g.Eventually(logsIn(bySecond)).WithTimeout(eventually).Should(Succeed())

	setTrustedCAs(t, ns, "", second)
	g.Eventually(logsIn(byFirst)).WithTimeout(eventually).Should(HaveOccurred(), "a CA removed is still trusted")
	g.Expect(logsIn(bySecond)()).To(Succeed())

	// A revocation that does not parse must not leave the certificate it meant working.
	setTrustedCAs(t, ns, "serial: forty-two\n", second)
	g.Eventually(logsIn(bySecond)).WithTimeout(eventually).Should(HaveOccurred(), "a ConfigMap that does not parse trusts no CA")
	g.Expect(inst.log.lines("the ConfigMap does not parse", `serial: \"forty-two\" is not a serial number`)).NotTo(BeEmpty())
	g.Eventually(func(g Gomega) {
		var list eventsv1.EventList
		g.Expect(env.Client.List(context.Background(), &list, client.InNamespace(ns))).To(Succeed())
		g.Expect(list.Items).To(ContainElement(And(
			HaveField("Reason", controllers.ReasonInvalidTrustedUserCAs),
			HaveField("Regarding.Name", caConfigMap),
			HaveField("Note", ContainSubstring("no certificate logs in until this ConfigMap is fixed")))))
	}).WithTimeout(eventually).Should(Succeed(), "no Warning event on the ConfigMap")

	setTrustedCAs(t, ns, "", second)
	g.Eventually(logsIn(bySecond)).WithTimeout(eventually).Should(Succeed())
	g.Expect(env.Client.Delete(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: caConfigMap}})).To(Succeed())
	g.Eventually(logsIn(bySecond)).WithTimeout(eventually).Should(HaveOccurred(), "a deleted ConfigMap trusts no CA")
}

// counter reads the counter name{labels} from the metrics registry; 0 when it has no
// such series.
func counter(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if maps.Equal(got, labels) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// authAttempts reads gitssh_ssh_auth_attempts_total{method="publickey",result}.
func authAttempts(t testing.TB, result string) float64 {
	return counter(t, "gitssh_ssh_auth_attempts_total", map[string]string{"method": "publickey", "result": result})
}
