package app_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"golang.org/x/crypto/ssh"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
)

const eventually = 20 * time.Second

// A key becomes usable when created, stops working when deleted, and an edited key
// swaps old for new — all observed with the real ssh and git clients.
func TestKeyCreateDeleteAndUpdate(t *testing.T) {
	ctx := context.Background()
	g := NewWithT(t)
	ns := env.Namespace(t)
	inst := startGitssh(t, ns, t.TempDir())
	createProject(t, ns, "acme-api", gitsshv1alpha1.GitProjectSpec{Owner: "alice", Project: "api"})
	laptop, desktop := newUserKey(t, "laptop"), newUserKey(t, "desktop")

	lsRemote := func(key userKey) func() (string, error) {
		return func() (string, error) { return inst.git(key, "", "ls-remote", inst.url("alice", "api")) }
	}
	out, err := lsRemote(laptop)()
	g.Expect(err).To(HaveOccurred(), "an unregistered key logs in: %s", out)
	g.Expect(out).To(ContainSubstring("Permission denied (publickey)"))

	key := createKey(t, ns, "alice-laptop", "alice", laptop.publicKey)
	g.Eventually(lsRemote(laptop)).WithTimeout(eventually).Should(BeEmpty(), "created key never became usable")

	g.Eventually(func(g Gomega) {
		ready := readyCondition(g, key)
		g.Expect(ready.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(ready.Reason).To(Equal(gitsshv1alpha1.ReasonKeyRegistered))
		g.Expect(key.Status.Fingerprint).To(HavePrefix("SHA256:"))
		g.Expect(key.Status.KeyType).To(Equal("ssh-ed25519"))
		g.Expect(key.Status.Bits).To(BeEquivalentTo(256))
		g.Expect(key.Status.ObservedGeneration).To(Equal(key.Generation))
	}).WithTimeout(eventually).Should(Succeed())
	fingerprint, _ := exec.Command("ssh-keygen", "-l", "-f", laptop.path+".pub").Output()
	g.Expect(string(fingerprint)).To(ContainSubstring(key.Status.Fingerprint), "status fingerprint is not ssh-keygen's")

	// Changing the key: the old one is refused, the new one accepted.
	// The usage recorder may write the key's lastUsedTime meanwhile: update the latest.
	g.Eventually(func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(key), key); err != nil {
			return err
		}
		key.Spec.PublicKey = desktop.publicKey
		return env.Client.Update(ctx, key)
	}).WithTimeout(eventually).Should(Succeed())
	g.Eventually(func() error { _, err := lsRemote(laptop)(); return err }).WithTimeout(eventually).Should(HaveOccurred(), "old key still logs in")
	g.Eventually(lsRemote(desktop)).WithTimeout(eventually).Should(BeEmpty(), "new key never became usable")

	g.Expect(env.Client.Delete(ctx, key)).To(Succeed())
	g.Eventually(func() string { out, _ := lsRemote(desktop)(); return out }).WithTimeout(eventually).
		Should(ContainSubstring("Permission denied (publickey)"), "deleted key still logs in")
}

// Invalid, weak and duplicate keys get the right condition and never log in; fixing the
// object makes it usable.
func TestUnusableKeysAreReportedAndRefused(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	inst := startGitssh(t, ns, t.TempDir())
	createProject(t, ns, "open", gitsshv1alpha1.GitProjectSpec{Owner: "acme", Project: "open", Visibility: gitsshv1alpha1.VisibilityPublic})

	weakRSA := filepath.Join(t.TempDir(), "weak")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", weakRSA).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	weakPub, _ := os.ReadFile(weakRSA + ".pub")
	weak := userKey{path: weakRSA, publicKey: strings.TrimSpace(string(weakPub))}
	good := newUserKey(t, "good")
	// A syntactically fine line whose base64 is not a key: the schema lets it through, the
	// controller cannot parse it.
	garbled := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGarbledGarbledGarbledGarbled alice@laptop"

	for _, tc := range []struct {
		name, user, publicKey string
		reason, message       string
		login                 userKey
	}{
		{"invalid", "ivan", garbled, gitsshv1alpha1.ReasonInvalidKey, "publicKey is not an OpenSSH public key", good},
		{"weak", "wendy", weak.publicKey, gitsshv1alpha1.ReasonWeakKey, "ssh-rsa key of 1024 bits is refused", weak},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			key := createKey(t, ns, tc.name, tc.user, tc.publicKey)
			g.Eventually(func(g Gomega) {
				ready := readyCondition(g, key)
				g.Expect(ready.Status).To(Equal(metav1.ConditionFalse))
				g.Expect(ready.Reason).To(Equal(tc.reason))
				g.Expect(ready.Message).To(ContainSubstring(tc.message))
			}).WithTimeout(eventually).Should(Succeed())
			out, err := inst.git(tc.login, "", "ls-remote", inst.url("acme", "open"))
			g.Expect(err).To(HaveOccurred(), "a %s key logged in: %s", tc.name, out)

			// Fix the object: the good key logs in as this user.
			key.Spec.PublicKey = good.publicKey
			key.Spec.User = "fixed-" + tc.name
			g.Expect(env.Client.Update(ctx, key)).To(Succeed())
			g.Eventually(func(g Gomega) {
				g.Expect(readyCondition(g, key).Status).To(Equal(metav1.ConditionTrue))
			}).WithTimeout(eventually).Should(Succeed())
			g.Eventually(func() error { _, err := inst.git(good, "", "ls-remote", inst.url("acme", "open")); return err }).
				WithTimeout(eventually).Should(Succeed())
			g.Expect(env.Client.Delete(ctx, key)).To(Succeed())
			g.Eventually(func() error { _, err := inst.git(good, "", "ls-remote", inst.url("acme", "open")); return err }).
				WithTimeout(eventually).Should(HaveOccurred())
		})
	}

	// The fingerprint index holds a bucket of each fingerprint (its first two base64
	// characters): two different keys in one bucket are not duplicates.
	t.Run("same-fingerprint-bucket", func(t *testing.T) {
		g := NewWithT(t)
		carolKey, daveKey := keysInOneFingerprintBucket(t)
		carol := createKey(t, ns, "carol", "carol", carolKey.publicKey)
		dave := createKey(t, ns, "dave", "dave", daveKey.publicKey)
		for user, key := range map[string]userKey{"carol": carolKey, "dave": daveKey} {
			createProject(t, ns, user+"-private", gitsshv1alpha1.GitProjectSpec{Owner: user, Project: "private"})
			g.Eventually(func() error { _, err := inst.git(key, "", "ls-remote", inst.url(user, "private")); return err }).
				WithTimeout(eventually).Should(Succeed(), "%s's key does not reach %s's project", user, user)
		}
		for _, key := range []*gitsshv1alpha1.SSHPublicKey{carol, dave} {
			g.Eventually(func(g Gomega) {
				g.Expect(readyCondition(g, key).Reason).To(Equal(gitsshv1alpha1.ReasonKeyRegistered))
			}).WithTimeout(eventually).Should(Succeed())
		}
	})

	t.Run("duplicate", func(t *testing.T) {
		createProject(t, ns, "bob-private", gitsshv1alpha1.GitProjectSpec{Owner: "bob", Project: "private"})
		shared := newUserKey(t, "shared")
		bob := createKey(t, ns, "bob", "bob", shared.publicKey)
		youngerKeyLoses(t, inst, shared, bob, inst.url("bob", "private"), "mallory", ns+"/bob")
	})
}

// youngerKeyLoses registers key, which older holds and reaches olderURL with, again as
// user's key in a younger object, and checks that older keeps it: the younger object is
// DuplicateKey with a message naming older (olderNamed), and the key does not reach user's
// own project. Deleting older hands the key to the younger object.
func youngerKeyLoses(t *testing.T, inst *instance, key userKey, older *gitsshv1alpha1.SSHPublicKey, olderURL, user, olderNamed string) {
	t.Helper()
	g := NewWithT(t)
	ns := older.Namespace
	createProject(t, ns, user+"-private", gitsshv1alpha1.GitProjectSpec{Owner: user, Project: "private"})
	g.Eventually(func(g Gomega) { g.Expect(readyCondition(g, older).Status).To(Equal(metav1.ConditionTrue)) }).WithTimeout(eventually).Should(Succeed())
	time.Sleep(1100 * time.Millisecond) // creation times have one-second granularity
	younger := createKey(t, ns, user, user, key.publicKey)
	g.Eventually(func(g Gomega) {
		ready := readyCondition(g, younger)
		g.Expect(ready.Reason).To(Equal(gitsshv1alpha1.ReasonDuplicateKey))
		g.Expect(ready.Message).To(ContainSubstring(olderNamed))
	}).WithTimeout(eventually).Should(Succeed())
	g.Expect(readyCondition(g, older).Status).To(Equal(metav1.ConditionTrue))

	// The key logs in as the older object's only.
	g.Expect(inst.git(key, "", "ls-remote", olderURL)).Error().NotTo(HaveOccurred())
	out, err := inst.git(key, "", "ls-remote", inst.url(user, "private"))
	g.Expect(err).To(HaveOccurred(), "one key logged in as two objects: %s", out)
	g.Expect(out).To(ContainSubstring(fmt.Sprintf(`repository "%s/private" not found or access denied`, user)))

	// Deleting the older object hands the key to the younger one.
	g.Expect(env.Client.Delete(context.Background(), older)).To(Succeed())
	g.Eventually(func(g Gomega) {
		ready := readyCondition(g, younger)
		g.Expect(ready.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(ready.Reason).To(Equal(gitsshv1alpha1.ReasonKeyRegistered))
	}).WithTimeout(eventually).Should(Succeed())
	g.Eventually(func() error { _, err := inst.git(key, "", "ls-remote", inst.url(user, "private")); return err }).
		WithTimeout(eventually).Should(Succeed())
	out, err = inst.git(key, "", "ls-remote", olderURL)
	g.Expect(err).To(HaveOccurred(), "the key still reaches %s as the deleted object's: %s", olderURL, out)
	g.Expect(out).To(ContainSubstring("not found or access denied"))
}

// keysInOneFingerprintBucket returns two ed25519 key pairs whose SHA256 fingerprints begin
// with the same two base64 characters (one of 4,096 buckets: about 80 keys to find two).
func keysInOneFingerprintBucket(t *testing.T) (userKey, userKey) {
	t.Helper()
	seen := map[string]ed25519.PrivateKey{}
	// The rule of controllers.fingerprintBucket, which this package cannot call.
	for range 5000 {
		_, private, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		public, err := ssh.NewPublicKey(private.Public())
		if err != nil {
			t.Fatal(err)
		}
		bucket := strings.TrimPrefix(ssh.FingerprintSHA256(public), "SHA256:")[:2]
		if other, ok := seen[bucket]; ok {
			return writeUserKey(t, "first", other), writeUserKey(t, "second", private)
		}
		seen[bucket] = private
	}
	t.Fatal("no two keys in one fingerprint bucket")
	return userKey{}, userKey{}
}

// writeUserKey writes private as an OpenSSH private key file, as ssh-keygen would.
func writeUserKey(t *testing.T, name string, private ed25519.PrivateKey) userKey {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(private, name)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	public, err := ssh.NewPublicKey(private.Public())
	if err != nil {
		t.Fatal(err)
	}
	return userKey{path: path, publicKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(public)))}
}
