package app_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
)

// A deploy key reaches its own project only: Read clones and fetches, Write also pushes;
// another private project and a Public one are refused as if they did not exist. Its use
// shows in its lastUsedTime and in the project's lastFetchTime and lastPushTime, and the
// same key cannot also be a user's key.
func TestDeployKeys(t *testing.T) {
	ctx := context.Background()
	g := NewWithT(t)
	ns := env.Namespace(t)
	inst := startGitssh(t, ns, t.TempDir())
	api := createProject(t, ns, "acme-api", gitsshv1alpha1.GitProjectSpec{Owner: "acme", Project: "api"})
	createProject(t, ns, "acme-other", gitsshv1alpha1.GitProjectSpec{Owner: "acme", Project: "other"})
	createProject(t, ns, "acme-open", gitsshv1alpha1.GitProjectSpec{Owner: "acme", Project: "open", Visibility: gitsshv1alpha1.VisibilityPublic})
	reader, writer := newUserKey(t, "ci-read"), newUserKey(t, "ci-write")
	readKey := createKeySpec(t, ns, "acme-api-read", gitsshv1alpha1.SSHPublicKeySpec{Project: "acme/api", PublicKey: reader.publicKey})
	writeKey := createKeySpec(t, ns, "acme-api-write", gitsshv1alpha1.SSHPublicKeySpec{Project: "acme/api", Access: gitsshv1alpha1.DeployAccessWrite, PublicKey: writer.publicKey})

	g.Eventually(func(g Gomega) {
		ready := readyCondition(g, readKey)
		g.Expect(ready.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(ready.Message).To(ContainSubstring(`logs in as deploy key for "acme/api" (Read)`))
	}).WithTimeout(eventually).Should(Succeed())

	// Write: clone the empty repository, commit, push.
	work := t.TempDir()
	g.Eventually(func() error { _, err := inst.git(writer, work, "clone", inst.url("acme", "api"), "w"); return err }).
		WithTimeout(eventually).Should(Succeed())
	w := filepath.Join(work, "w")
	g.Expect(os.WriteFile(filepath.Join(w, "README"), []byte("hello\n"), 0o644)).To(Succeed())
	g.Expect(inst.git(writer, w, "add", "README")).Error().NotTo(HaveOccurred())
	g.Expect(inst.git(writer, w, "commit", "-q", "-m", "first")).Error().NotTo(HaveOccurred())
	out, err := inst.git(writer, w, "push", "origin", "HEAD:main")
	g.Expect(err).NotTo(HaveOccurred(), out)

	// Read: clone works, push does not.
	out, err = inst.git(reader, work, "clone", inst.url("acme", "api"), "r")
	g.Expect(err).NotTo(HaveOccurred(), out)
	r := filepath.Join(work, "r")
	g.Expect(os.ReadFile(filepath.Join(r, "README"))).To(Equal([]byte("hello\n")))
	g.Expect(inst.git(reader, r, "commit", "-q", "--allow-empty", "-m", "nope")).Error().NotTo(HaveOccurred())
	out, err = inst.git(reader, r, "push", "origin", "HEAD:main")
	g.Expect(err).To(HaveOccurred(), "a Read deploy key pushed: %s", out)
	g.Expect(out).To(ContainSubstring(`repository "acme/api" not found or access denied`))

	// Nothing else, not even a Public project.
	for _, key := range []userKey{reader, writer} {
		for _, project := range []string{"other", "open"} {
			out, err := inst.git(key, "", "ls-remote", inst.url("acme", project))
			g.Expect(err).To(HaveOccurred(), "deploy key %s reached acme/%s: %s", key.path, project, out)
			g.Expect(out).To(ContainSubstring(fmt.Sprintf(`repository "acme/%s" not found or access denied`, project)))
		}
	}

	shell := exec.Command("sh", "-c", inst.sshCommand(reader)+fmt.Sprintf(" -p %d git@127.0.0.1", inst.port))
	out2, err := shell.CombinedOutput()
	g.Expect(err).To(HaveOccurred())
	g.Expect(string(out2)).To(ContainSubstring("Hi deploy key for acme/api! You've successfully authenticated"))

	g.Eventually(func(g Gomega) {
		for _, key := range []*gitsshv1alpha1.SSHPublicKey{readKey, writeKey} {
			g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(key), key)).To(Succeed())
			g.Expect(key.Status.LastUsedTime).NotTo(BeNil(), key.Name)
		}
		g.Expect(readKey.Status.LastFailedTime).NotTo(BeNil(), "refused push and projects are failures")
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(api), api)).To(Succeed())
		g.Expect(api.Status.LastPushTime).NotTo(BeNil())
		g.Expect(api.Status.LastFetchTime).NotTo(BeNil())
	}).WithTimeout(eventually).Should(Succeed())
	// The refusals' Warning names the deploy key's project, as it has no user.
	g.Expect(readKey.Status.Fingerprint).To(HavePrefix("SHA256:"))
	g.Eventually(func(g Gomega) {
		var refused []string
		for _, e := range eventsAbout(g, ns, readKey.Name) {
			if e.Reason == "KeyRefused" {
				refused = append(refused, e.Message)
			}
		}
		g.Expect(refused).To(ContainElement(HavePrefix(fmt.Sprintf(`Deploy key %s of project "acme/api" was offered without proof`, readKey.Status.Fingerprint))))
	}).WithTimeout(eventually).Should(Succeed())

	// The reader's key as a user's key too: the younger object loses, whichever kind it is.
	youngerKeyLoses(t, inst, reader, readKey, inst.url("acme", "api"), "bob", ns+`/acme-api-read (deploy key for "acme/api" (Read))`)
}

// A deploy key for a project no GitProject serves is not Ready, and says what to do; it
// turns Ready when the GitProject is created, and back when it is deleted.
func TestDeployKeyForAMissingProject(t *testing.T) {
	ctx := context.Background()
	g := NewWithT(t)
	ns := env.Namespace(t)
	startGitssh(t, ns, t.TempDir())
	key := createKeySpec(t, ns, "acme-api-ci", gitsshv1alpha1.SSHPublicKeySpec{Project: "acme/api", PublicKey: newUserKey(t, "ci").publicKey})
	// Another project of the same owner does not count.
	createProject(t, ns, "acme-web", gitsshv1alpha1.GitProjectSpec{Owner: "acme", Project: "web"})
	notFound := func(g Gomega) {
		ready := readyCondition(g, key)
		g.Expect(ready.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(ready.Reason).To(Equal(gitsshv1alpha1.ReasonProjectNotFound))
		g.Expect(ready.Message).To(Equal(`no GitProject serves "acme/api", so this deploy key reaches nothing: ` +
			`create a GitProject with spec.owner "acme" and spec.project "api", or correct spec.project`))
	}
	g.Eventually(notFound).WithTimeout(eventually).Should(Succeed())

	project := createProject(t, ns, "acme-api", gitsshv1alpha1.GitProjectSpec{Owner: "acme", Project: "api"})
	g.Eventually(func(g Gomega) {
		ready := readyCondition(g, key)
		g.Expect(ready.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(ready.Reason).To(Equal(gitsshv1alpha1.ReasonKeyRegistered))
	}).WithTimeout(eventually).Should(Succeed())

	g.Expect(env.Client.Delete(ctx, project)).To(Succeed())
	g.Eventually(notFound).WithTimeout(eventually).Should(Succeed())
}
