package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
)

// lostClaim says why a key does not log in when another object holds the same key, by the
// authorizer's rule, and when to look again; --max-key-lifetime counts as an expiry.
func TestLostClaim(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0.Add(10 * time.Hour)
	key := func(name string, created time.Time, expires *time.Time, project string) *gitsshv1alpha1.SSHPublicKey {
		k := &gitsshv1alpha1.SSHPublicKey{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, CreationTimestamp: metav1.Time{Time: created}},
			Spec:       gitsshv1alpha1.SSHPublicKeySpec{User: name, Project: project},
		}
		if project != "" {
			k.Spec.User = ""
		}
		if expires != nil {
			k.Spec.ExpirationTime = &metav1.Time{Time: *expires}
		}
		return k
	}
	at := func(d time.Duration) *time.Time { t := t0.Add(d); return &t }
	tests := []struct {
		name        string
		maxLifetime time.Duration
		self        *gitsshv1alpha1.SSHPublicKey
		others      []*gitsshv1alpha1.SSHPublicKey
		message     string // "" = the key wins
		next        []time.Time
	}{
		{name: "alone", self: key("me", t0, nil, "")},
		{name: "older live user key", self: key("me", t0.Add(time.Hour), nil, ""),
			others:  []*gitsshv1alpha1.SSHPublicKey{key("old", t0, at(20*time.Hour), "")},
			message: `already registered by SSHPublicKey ns/old (user "old"), which is older`, next: []time.Time{*at(20 * time.Hour)}},
		{name: "older deploy key", self: key("me", t0.Add(time.Hour), nil, ""),
			others:  []*gitsshv1alpha1.SSHPublicKey{key("ci", t0, nil, "acme/api")},
			message: `ns/ci (deploy key for "acme/api" (Read))`},
		{name: "younger key loses", self: key("me", t0, nil, ""),
			others: []*gitsshv1alpha1.SSHPublicKey{key("new", t0.Add(time.Hour), nil, "")}},
		{name: "same second: the name decides", self: key("b", t0, nil, ""),
			others:  []*gitsshv1alpha1.SSHPublicKey{key("a", t0, nil, "")},
			message: "ns/a"},
		{name: "older expired, no expiry here", self: key("me", t0.Add(time.Hour), nil, ""),
			others:  []*gitsshv1alpha1.SSHPublicKey{key("old", t0, at(2*time.Hour), "")},
			message: "was registered by SSHPublicKey ns/old, which expired at 2026-01-01T02:00:00Z; an expired key comes back only with an expiration time",
			next:    []time.Time{*at(2 * time.Hour)}},
		{name: "older expired, a new expiry here", self: key("me", t0.Add(time.Hour), at(30*time.Hour), ""),
			others: []*gitsshv1alpha1.SSHPublicKey{key("old", t0, at(2*time.Hour), "")}, next: []time.Time{*at(2 * time.Hour)}},
		{name: "older expired by the maximum lifetime, capped here too", maxLifetime: 5 * time.Hour,
			self:   key("me", t0.Add(8*time.Hour), nil, ""),
			others: []*gitsshv1alpha1.SSHPublicKey{key("old", t0, nil, "")}, next: []time.Time{*at(5 * time.Hour)}},
		{name: "a deleted holder does not count", self: key("me", t0.Add(time.Hour), nil, ""),
			others: []*gitsshv1alpha1.SSHPublicKey{func() *gitsshv1alpha1.SSHPublicKey {
				k := key("old", t0, nil, "")
				k.DeletionTimestamp = &metav1.Time{Time: now}
				return k
			}()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			r := &SSHPublicKeyReconciler{MaxKeyLifetime: tt.maxLifetime}
			expires, _ := keyExpiry(tt.self, tt.maxLifetime)
			lost, next := r.lostClaim(tt.self, "SHA256:x", expires, append(tt.others, tt.self), now)
			g.Expect(next).To(Equal(tt.next))
			if tt.message == "" {
				g.Expect(lost).To(BeNil())
				return
			}
			g.Expect(lost).NotTo(BeNil())
			g.Expect(lost.Reason).To(Equal(gitsshv1alpha1.ReasonDuplicateKey))
			g.Expect(lost.Message).To(ContainSubstring(tt.message))
		})
	}
}

func TestKeyExpiryAndDays(t *testing.T) {
	g := NewWithT(t)
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	key := &gitsshv1alpha1.SSHPublicKey{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.Time{Time: created}}}
	expires, capped := keyExpiry(key, 0)
	g.Expect(expires.IsZero()).To(BeTrue())
	g.Expect(capped).To(BeFalse())
	expires, capped = keyExpiry(key, 48*time.Hour)
	g.Expect(expires).To(Equal(created.Add(48 * time.Hour)))
	g.Expect(capped).To(BeTrue())
	key.Spec.ExpirationTime = &metav1.Time{Time: created.Add(time.Hour)}
	expires, capped = keyExpiry(key, 48*time.Hour)
	g.Expect(expires).To(Equal(created.Add(time.Hour)))
	g.Expect(capped).To(BeFalse(), "the earlier of the two applies")

	g.Expect(days(24 * time.Hour)).To(Equal("1 day"))
	g.Expect(days(7 * 24 * time.Hour)).To(Equal("7 days"))
	g.Expect(days(36 * time.Hour)).To(Equal("36h0m0s"))
}
