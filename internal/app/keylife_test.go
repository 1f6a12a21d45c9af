package app_test

import (
	"context"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/internal/app"
)

// eventsOf returns "Type/Reason" of every event about the object named name.
func eventsOf(g Gomega, ns, name string) []string {
	var out []string
	for _, e := range eventsAbout(g, ns, name) {
		out = append(out, e.Type+"/"+e.Reason)
	}
	return out
}

// startWithAlicesKey starts gitssh in a new namespace with options changed by configure,
// the project alice/api and one registered key of alice's.
func startWithAlicesKey(t *testing.T, configure func(*app.Options)) (*instance, *gitsshv1alpha1.SSHPublicKey, userKey) {
	ns := env.Namespace(t)
	inst := startGitssh(t, ns, t.TempDir(), configure)
	createProject(t, ns, "alice-api", gitsshv1alpha1.GitProjectSpec{Owner: "alice", Project: "api"})
	laptop := newUserKey(t, "laptop")
	return inst, createKey(t, ns, "alice-laptop", "alice", laptop.publicKey), laptop
}

func createExpiringKey(t testing.TB, ns, name, user, publicKey string, expires time.Time) *gitsshv1alpha1.SSHPublicKey {
	t.Helper()
	return createKeySpec(t, ns, name, gitsshv1alpha1.SSHPublicKeySpec{User: user, PublicKey: publicKey, ExpirationTime: &metav1.Time{Time: expires}})
}

// An expired key is refused; a key expiring during the test logs in until its instant and
// is refused right after it, before any status says so; its Ready condition goes
// ExpiringSoon then Expired, each with a Warning event; the same key registered again by a
// new object is refused unless that object has an expiry of its own.
func TestKeyExpiry(t *testing.T) {
	ctx := context.Background()
	g := NewWithT(t)
	ns := env.Namespace(t)
	// A warning window longer than the test: a key expiring in seconds is ExpiringSoon at once.
	inst := startGitssh(t, ns, t.TempDir(), func(o *app.Options) { o.KeyExpiryWarning = time.Hour })
	createProject(t, ns, "alice-api", gitsshv1alpha1.GitProjectSpec{Owner: "alice", Project: "api"})
	lsRemote := func(key userKey) (string, error) { return inst.git(key, "", "ls-remote", inst.url("alice", "api")) }

	t.Run("already expired", func(t *testing.T) {
		g := NewWithT(t)
		old := newUserKey(t, "old")
		key := createExpiringKey(t, ns, "alice-old", "alice", old.publicKey, time.Now().Add(-time.Minute))
		g.Eventually(func(g Gomega) {
			ready := readyCondition(g, key)
			g.Expect(ready.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(ready.Reason).To(Equal(gitsshv1alpha1.ReasonExpired))
			g.Expect(ready.Message).To(ContainSubstring("expired at " + key.Spec.ExpirationTime.UTC().Format(time.RFC3339)))
			g.Expect(key.Status.ExpirationTime.Equal(key.Spec.ExpirationTime)).To(BeTrue())
			g.Expect(eventsOf(g, ns, key.Name)).To(ContainElement("Warning/Expired"))
		}).WithTimeout(eventually).Should(Succeed())
		out, err := lsRemote(old)
		g.Expect(err).To(HaveOccurred(), "an expired key logged in: %s", out)
		g.Expect(out).To(ContainSubstring("Permission denied (publickey)"))
	})

	laptop, desktop := newUserKey(t, "laptop"), newUserKey(t, "desktop")
	expires := time.Now().Add(8 * time.Second).Truncate(time.Second)
	key := createExpiringKey(t, ns, "alice-laptop", "alice", laptop.publicKey, expires)
	// Never used: nothing but the leader's own requeue can turn it Expired.
	unused := createExpiringKey(t, ns, "alice-desktop", "alice", desktop.publicKey, expires)
	g.Eventually(func() error { _, err := lsRemote(laptop); return err }).WithTimeout(eventually).Should(Succeed())
	g.Eventually(func(g Gomega) {
		ready := readyCondition(g, key)
		g.Expect(ready.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(ready.Reason).To(Equal(gitsshv1alpha1.ReasonExpiringSoon))
		g.Expect(ready.Message).To(ContainSubstring("expires within 1h0m0s: set a later spec.expirationTime"))
		g.Expect(eventsOf(g, ns, key.Name)).To(ContainElement("Warning/ExpiringSoon"))
	}).WithTimeout(eventually).Should(Succeed())
	g.Expect(time.Now()).To(BeTemporally("<", expires), "the test was too slow to see the key work before it expired")

	// Logins work up to the instant and fail from it on. Nothing about the object changes
	// at that instant: the authorizer compares the time at each login.
	var lastOK, firstRefused time.Time
	g.Eventually(func() error {
		before := time.Now()
		_, err := lsRemote(laptop)
		if err == nil {
			lastOK = before
		} else {
			firstRefused = time.Now()
		}
		return err
	}).WithTimeout(eventually).WithPolling(100 * time.Millisecond).Should(HaveOccurred())
	g.Expect(lastOK).To(BeTemporally("<", expires), "a login started after the expiry succeeded")
	g.Expect(firstRefused).To(BeTemporally(">=", expires), "refused before its expiry")
	g.Expect(firstRefused).To(BeTemporally("<", expires.Add(2*time.Second)), "refused late")
	out, _ := lsRemote(laptop)
	g.Expect(out).To(ContainSubstring("Permission denied (publickey)"))

	for _, k := range []*gitsshv1alpha1.SSHPublicKey{key, unused} {
		g.Eventually(func(g Gomega) {
			ready := readyCondition(g, k)
			g.Expect(ready.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(ready.Reason).To(Equal(gitsshv1alpha1.ReasonExpired))
			g.Expect(eventsOf(g, ns, k.Name)).To(ContainElements("Warning/ExpiringSoon", "Warning/Expired"))
		}).WithTimeout(eventually).Should(Succeed())
	}
	g.Expect(unused.Status.LastUsedTime).To(BeNil())

	// The same key under a new object without an expiry: refused, and the status says why.
	again := createKey(t, ns, "alice-laptop-again", "alice", laptop.publicKey)
	g.Eventually(func(g Gomega) {
		ready := readyCondition(g, again)
		g.Expect(ready.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(ready.Reason).To(Equal(gitsshv1alpha1.ReasonDuplicateKey))
		g.Expect(ready.Message).To(ContainSubstring("was registered by SSHPublicKey " + ns + "/alice-laptop, which expired at"))
	}).WithTimeout(eventually).Should(Succeed())
	out, err := lsRemote(laptop)
	g.Expect(err).To(HaveOccurred(), "an expired key came back without an expiry: %s", out)

	// With an expiry of its own it comes back.
	before := again.DeepCopy()
	again.Spec.ExpirationTime = &metav1.Time{Time: time.Now().Add(48 * time.Hour).Truncate(time.Second)}
	g.Expect(env.Client.Patch(ctx, again, client.MergeFrom(before))).To(Succeed())
	g.Eventually(func() error { _, err := lsRemote(laptop); return err }).WithTimeout(eventually).Should(Succeed())
	g.Eventually(func(g Gomega) {
		ready := readyCondition(g, again)
		g.Expect(ready.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(ready.Reason).To(Equal(gitsshv1alpha1.ReasonKeyRegistered))
		g.Expect(ready.Message).To(ContainSubstring("until " + again.Spec.ExpirationTime.UTC().Format(time.RFC3339)))
	}).WithTimeout(eventually).Should(Succeed())
}

// --max-key-lifetime ends a key without expirationTime that long after its creation, at
// the instant, and shows it in status.expirationTime and kubectl's EXPIRES column.
func TestMaxKeyLifetime(t *testing.T) {
	g := NewWithT(t)
	inst, key, laptop := startWithAlicesKey(t, func(o *app.Options) { o.MaxKeyLifetime = 6 * time.Second })
	ns := inst.namespace
	expires := key.CreationTimestamp.Add(6 * time.Second)

	g.Eventually(func() error { _, err := inst.git(laptop, "", "ls-remote", inst.url("alice", "api")); return err }).
		WithTimeout(eventually).Should(Succeed())
	g.Eventually(func(g Gomega) {
		ready := readyCondition(g, key)
		g.Expect(ready.Reason).To(Equal(gitsshv1alpha1.ReasonExpiringSoon))
		g.Expect(ready.Message).To(ContainSubstring("6s after its creation, the server's --max-key-lifetime"))
		g.Expect(key.Status.ExpirationTime).NotTo(BeNil())
		g.Expect(key.Status.ExpirationTime.Time).To(BeTemporally("==", expires))
	}).WithTimeout(eventually).Should(Succeed())
	out, err := env.Kubectl(context.Background(), "get", "sshkeys", "-n", ns)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(out).To(ContainSubstring(expires.UTC().Format(time.RFC3339)), "EXPIRES column")

	g.Eventually(func() string { out, _ := inst.git(laptop, "", "ls-remote", inst.url("alice", "api")); return out }).
		WithTimeout(eventually).Should(ContainSubstring("Permission denied (publickey)"))
	g.Expect(time.Now()).To(BeTemporally(">=", expires))
	g.Eventually(func(g Gomega) {
		ready := readyCondition(g, key)
		g.Expect(ready.Reason).To(Equal(gitsshv1alpha1.ReasonExpired))
		g.Expect(ready.Message).To(ContainSubstring("register a new key"))
	}).WithTimeout(eventually).Should(Succeed())
}

// With --stale-key-after a key nobody uses turns Stale (Warning event, kubectl's STALE
// column), a login makes it fresh again, and staying unused makes it stale again.
func TestStaleKeys(t *testing.T) {
	g := NewWithT(t)
	inst, key, laptop := startWithAlicesKey(t, func(o *app.Options) { o.StaleKeyAfter = 4 * time.Second })
	ns := inst.namespace
	stale := func(g Gomega) metav1.Condition {
		g.Expect(env.Client.Get(context.Background(), client.ObjectKeyFromObject(key), key)).To(Succeed())
		c := meta.FindStatusCondition(key.Status.Conditions, gitsshv1alpha1.ConditionStale)
		g.Expect(c).NotTo(BeNil())
		return *c
	}
	staleColumn := func(g Gomega) string {
		out, err := env.Kubectl(context.Background(), "get", "sshkey", key.Name, "-n", ns)
		g.Expect(err).NotTo(HaveOccurred())
		lines := strings.Split(strings.TrimSpace(out), "\n")
		g.Expect(lines).To(HaveLen(2))
		header, row := strings.Fields(lines[0]), strings.Fields(lines[1])
		// LAST USED is two words in the header; the row's last-used cell is one.
		g.Expect(header[len(header)-2:]).To(Equal([]string{"STALE", "AGE"}))
		return row[len(row)-2]
	}

	g.Eventually(func(g Gomega) {
		c := stale(g)
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(c.Reason).To(Equal(gitsshv1alpha1.ReasonRecentlyUsed))
	}).WithTimeout(eventually).Should(Succeed())

	g.Eventually(func(g Gomega) {
		c := stale(g)
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(c.Reason).To(Equal(gitsshv1alpha1.ReasonUnused))
		g.Expect(c.Message).To(ContainSubstring("never logged in since it was created at"))
		g.Expect(eventsOf(g, ns, key.Name)).To(ContainElement("Warning/Unused"))
		g.Expect(staleColumn(g)).To(Equal("True"))
	}).WithTimeout(eventually).Should(Succeed())
	g.Expect(readyCondition(g, key).Status).To(Equal(metav1.ConditionTrue), "a stale key still logs in")

	g.Expect(inst.git(laptop, "", "ls-remote", inst.url("alice", "api"))).Error().NotTo(HaveOccurred())
	g.Eventually(func(g Gomega) {
		c := stale(g)
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(eventsOf(g, ns, key.Name)).To(ContainElement("Normal/RecentlyUsed"))
		g.Expect(staleColumn(g)).To(Equal("False"))
	}).WithTimeout(eventually).Should(Succeed())

	g.Eventually(func(g Gomega) {
		c := stale(g)
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(c.Message).To(ContainSubstring("has not logged in since " + key.Status.LastUsedTime.UTC().Format(time.RFC3339)))
	}).WithTimeout(eventually).Should(Succeed())
}
