package app

import (
	"encoding/json"
	"testing"
	"unsafe"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
)

func TestStripForCache(t *testing.T) {
	managed := []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}
	for _, tc := range []struct {
		name            string
		annotations     map[string]string
		managedFields   []metav1.ManagedFieldsEntry
		wantAnnotations map[string]string
	}{
		{name: "applied server-side and client-side",
			annotations:   map[string]string{lastAppliedAnnotation: `{"spec":{}}`, "team": "a"},
			managedFields: managed, wantAnnotations: map[string]string{"team": "a"}},
		{name: "only the last-applied annotation",
			annotations: map[string]string{lastAppliedAnnotation: `{"spec":{}}`}},
		{name: "only managedFields", managedFields: managed},
		{name: "neither", annotations: map[string]string{"team": "a"}, wantAnnotations: map[string]string{"team": "a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			key := &gitsshv1alpha1.SSHPublicKey{
				ObjectMeta: metav1.ObjectMeta{Name: "k", Annotations: tc.annotations, ManagedFields: tc.managedFields},
				Spec:       gitsshv1alpha1.SSHPublicKeySpec{User: "alice", PublicKey: "ssh-ed25519 AAAA"},
			}
			out, err := stripForCache(key)
			g.Expect(err).NotTo(HaveOccurred())
			stripped := out.(*gitsshv1alpha1.SSHPublicKey)
			g.Expect(stripped.ManagedFields).To(BeNil())
			g.Expect(stripped.Annotations).To(Equal(tc.wantAnnotations))
			g.Expect(stripped.Spec).To(Equal(key.Spec), "what the controllers read is kept")
		})
	}
	// A tombstone of a deleted object passes through untouched.
	g := NewWithT(t)
	out, err := stripForCache("not an object")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(out).To(Equal("not an object"))
}

// Objects decoded apart share, once transformed, the strings they hold alike, and keep
// every value.
func TestStripForCacheSharesStrings(t *testing.T) {
	g := NewWithT(t)
	const doc = `{"metadata":{"name":"k","namespace":"team-a"},"spec":{"user":"alice","publicKey":"ssh-ed25519 AAAA"},
		"status":{"keyType":"ssh-ed25519","conditions":[{"type":"Ready","status":"True","reason":"KeyRegistered","message":"m"},
		{"type":"Stale","status":"False","reason":"RecentlyUsed","message":"logged in or created within the last 90 days"}]}}`
	var keys [2]*gitsshv1alpha1.SSHPublicKey
	for i := range keys {
		keys[i] = &gitsshv1alpha1.SSHPublicKey{}
		g.Expect(json.Unmarshal([]byte(doc), keys[i])).To(Succeed())
		want := keys[i].DeepCopy()
		_, err := stripForCache(keys[i])
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(keys[i]).To(Equal(want))
	}
	a, b := keys[0], keys[1]
	for name, pair := range map[string][2]string{
		"namespace": {a.Namespace, b.Namespace},
		"user":      {a.Spec.User, b.Spec.User},
		"keyType":   {a.Status.KeyType, b.Status.KeyType},
		"reason":    {a.Status.Conditions[0].Reason, b.Status.Conditions[0].Reason},
		"stale":     {a.Status.Conditions[1].Message, b.Status.Conditions[1].Message},
	} {
		g.Expect(unsafe.StringData(pair[0])).To(BeIdenticalTo(unsafe.StringData(pair[1])), name)
	}
}
