package authorizer

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

var (
	t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	t1 = t0.Add(time.Hour)
	t2 = t0.Add(2 * time.Hour)
)

func ref(name string) ObjectRef { return ObjectRef{Namespace: "default", Name: name} }

func user(name string) Identity { return Identity{User: name} }

func deployKey(owner, name string, access Access) Identity {
	return Identity{Deploy: &Deploy{Owner: owner, Name: name, Access: access}}
}

func TestObjectRefString(t *testing.T) {
	g := NewWithT(t)
	g.Expect(ObjectRef{Namespace: "ns", Name: "n"}.String()).To(Equal("ns/n"))
}

func TestKeys(t *testing.T) {
	type op struct {
		set    bool
		ref    string
		fp     string
		user   string
		create time.Time
	}
	set := func(r, fp, user string, c time.Time) op { return op{true, r, fp, user, c} }
	del := func(r string) op { return op{ref: r} }
	tests := []struct {
		name      string
		ops       []op
		fp        string
		wantUser  string
		wantOwner string // "" = no owner
	}{
		{name: "unknown key", fp: "SHA256:x"},
		{name: "one key", ops: []op{set("a", "SHA256:x", "alice", t0)}, fp: "SHA256:x", wantUser: "alice", wantOwner: "a"},
		{name: "older wins even when added later",
			ops: []op{set("new", "SHA256:x", "mallory", t1), set("old", "SHA256:x", "alice", t0)},
			fp:  "SHA256:x", wantUser: "alice", wantOwner: "old"},
		{name: "tie broken by ref string",
			ops: []op{set("b", "SHA256:x", "bob", t0), set("a", "SHA256:x", "alice", t0)},
			fp:  "SHA256:x", wantUser: "alice", wantOwner: "a"},
		{name: "next claimant takes over when the winner is removed",
			ops: []op{set("old", "SHA256:x", "alice", t0), set("mid", "SHA256:x", "bob", t1), set("new", "SHA256:x", "carol", t2), del("old")},
			fp:  "SHA256:x", wantUser: "bob", wantOwner: "mid"},
		{name: "removing a loser keeps the winner",
			ops: []op{set("old", "SHA256:x", "alice", t0), set("new", "SHA256:x", "bob", t1), del("new")},
			fp:  "SHA256:x", wantUser: "alice", wantOwner: "old"},
		{name: "removing the only claimant revokes",
			ops: []op{set("a", "SHA256:x", "alice", t0), del("a")}, fp: "SHA256:x"},
		{name: "changed fingerprint drops the old claim",
			ops: []op{set("a", "SHA256:x", "alice", t0), set("a", "SHA256:y", "alice", t0)}, fp: "SHA256:x"},
		{name: "changed fingerprint hands the old one to the next claimant",
			ops: []op{set("a", "SHA256:x", "alice", t0), set("b", "SHA256:x", "bob", t1), set("a", "SHA256:y", "alice", t0)},
			fp:  "SHA256:x", wantUser: "bob", wantOwner: "b"},
		{name: "new fingerprint is claimed after a change",
			ops: []op{set("a", "SHA256:x", "alice", t0), set("a", "SHA256:y", "alice", t0)}, fp: "SHA256:y", wantUser: "alice", wantOwner: "a"},
		{name: "changed user is seen",
			ops: []op{set("a", "SHA256:x", "alice", t0), set("a", "SHA256:x", "alicia", t0)}, fp: "SHA256:x", wantUser: "alicia", wantOwner: "a"},
		{name: "removing an unknown ref is a no-op",
			ops: []op{set("a", "SHA256:x", "alice", t0), del("zzz")}, fp: "SHA256:x", wantUser: "alice", wantOwner: "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			a := New()
			for _, o := range tt.ops {
				if o.set {
					a.SetKey(ref(o.ref), Key{Fingerprint: o.fp, User: o.user, Created: o.create})
				} else {
					a.RemoveKey(ref(o.ref))
				}
			}
			id, ok := a.UserForKey(tt.fp)
			owner, ownerOK := a.KeyOwner(tt.fp)
			if tt.wantOwner == "" {
				g.Expect(ok).To(BeFalse())
				g.Expect(ownerOK).To(BeFalse())
				return
			}
			g.Expect(ok).To(BeTrue())
			g.Expect(id).To(Equal(Identity{User: tt.wantUser, Key: ref(tt.wantOwner), Fingerprint: tt.fp}))
			g.Expect(ownerOK).To(BeTrue())
			g.Expect(owner).To(Equal(ref(tt.wantOwner)))
		})
	}
}

func TestProjectOwner(t *testing.T) {
	g := NewWithT(t)
	a := New()
	a.SetProject(ref("new"), Project{Owner: "acme", Name: "api", RepositoryPath: "/new", Created: t1})
	a.SetProject(ref("old"), Project{Owner: "acme", Name: "api", RepositoryPath: "/old", Quota: 1 << 30, Created: t0})

	owner, ok := a.ProjectOwner("acme", "api")
	g.Expect(ok).To(BeTrue())
	g.Expect(owner).To(Equal(ref("old")))
	repo, ok := a.Authorize(user("acme"), "acme", "api", AccessWrite)
	g.Expect(ok).To(BeTrue())
	g.Expect(repo).To(Equal(Repository{Path: "/old", Project: ref("old"), Owner: "acme", Name: "api", Quota: 1 << 30}))

	_, ok = a.ProjectOwner("Acme", "api")
	g.Expect(ok).To(BeFalse(), "lookups are case-sensitive")

	a.RemoveProject(ref("old"))
	owner, ok = a.ProjectOwner("acme", "api")
	g.Expect(ok).To(BeTrue())
	g.Expect(owner).To(Equal(ref("new")), "the next claimant takes over")
	repo, _ = a.Authorize(user("acme"), "acme", "api", AccessRead)
	g.Expect(repo.Path).To(Equal("/new"))

	a.SetProject(ref("new"), Project{Owner: "acme", Name: "web", RepositoryPath: "/web", Created: t1})
	_, ok = a.ProjectOwner("acme", "api")
	g.Expect(ok).To(BeFalse(), "a renamed project gives up its old name")
	_, ok = a.ProjectOwner("acme", "web")
	g.Expect(ok).To(BeTrue())

	a.RemoveProject(ref("new"))
	_, ok = a.ProjectOwner("acme", "web")
	g.Expect(ok).To(BeFalse())
}

func TestAuthorize(t *testing.T) {
	a := New()
	a.SetProject(ref("private"), Project{Owner: "acme", Name: "private", RepositoryPath: "/r/acme/private.git",
		Members: map[string]Role{"reader": RoleRead, "writer": RoleWrite, "admin": RoleAdmin, "nobody": RoleNone}})
	a.SetProject(ref("public"), Project{Owner: "acme", Name: "public", Visibility: Public, RepositoryPath: "/r/acme/public.git",
		Members: map[string]Role{"writer": RoleWrite}})
	tests := []struct {
		id          Identity
		owner, name string
		access      Access
		want        bool
	}{
		{user("acme"), "acme", "private", AccessRead, true},
		{user("acme"), "acme", "private", AccessWrite, true},
		{user("reader"), "acme", "private", AccessRead, true},
		{user("reader"), "acme", "private", AccessWrite, false},
		{user("writer"), "acme", "private", AccessRead, true},
		{user("writer"), "acme", "private", AccessWrite, true},
		{user("admin"), "acme", "private", AccessWrite, true},
		{user("nobody"), "acme", "private", AccessRead, false},
		{user("stranger"), "acme", "private", AccessRead, false},
		{user("Acme"), "acme", "private", AccessRead, false},
		{user("acme"), "acme", "Private", AccessRead, false},
		{user("stranger"), "acme", "public", AccessRead, true},
		{user("stranger"), "acme", "public", AccessWrite, false},
		{user("writer"), "acme", "public", AccessWrite, true},
		{user(""), "acme", "public", AccessRead, false},
		{user("acme"), "acme", "missing", AccessRead, false},
		{user("acme"), "acme", "private", Access(0), false},
		// A deploy key reaches its own project with its own access, and nothing else.
		{deployKey("acme", "private", AccessRead), "acme", "private", AccessRead, true},
		{deployKey("acme", "private", AccessRead), "acme", "private", AccessWrite, false},
		{deployKey("acme", "private", AccessWrite), "acme", "private", AccessWrite, true},
		{deployKey("acme", "private", AccessWrite), "acme", "private", AccessRead, true},
		{deployKey("acme", "private", AccessWrite), "acme", "public", AccessRead, false},
		{deployKey("acme", "public", AccessRead), "acme", "public", AccessWrite, false},
		{deployKey("acme", "missing", AccessWrite), "acme", "missing", AccessRead, false},
		{deployKey("acme", "private", AccessRead), "acme", "Private", AccessRead, false},
		{deployKey("acme", "private", Access(0)), "acme", "private", AccessRead, false},
		{Identity{User: "acme", Deploy: &Deploy{Owner: "acme", Name: "public", Access: AccessRead}}, "acme", "private", AccessRead, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %s/%s %s", tt.id, tt.owner, tt.name, tt.access), func(t *testing.T) {
			g := NewWithT(t)
			repo, ok := a.Authorize(tt.id, tt.owner, tt.name, tt.access)
			g.Expect(ok).To(Equal(tt.want))
			if tt.want {
				g.Expect(repo.Path).To(Equal("/r/" + tt.owner + "/" + tt.name + ".git"))
				g.Expect(repo.Project).To(Equal(ref(tt.name)))
			} else {
				g.Expect(repo).To(BeZero())
			}
		})
	}
}

func TestSetProjectCopiesMembers(t *testing.T) {
	g := NewWithT(t)
	a := New()
	m := map[string]Role{"bob": RoleRead}
	a.SetProject(ref("p"), Project{Owner: "acme", Name: "p", Members: m})
	m["bob"] = RoleWrite
	_, ok := a.Authorize(user("bob"), "acme", "p", AccessWrite)
	g.Expect(ok).To(BeFalse())
}

// TestConcurrentReadersAndWriters is meant for -race: reconcilers write while
// logins read, and a key that is never removed stays visible throughout.
func TestConcurrentReadersAndWriters(t *testing.T) {
	g := NewWithT(t)
	a := New()
	a.SetKey(ref("stable"), Key{Fingerprint: "SHA256:stable", User: "alice", Created: t0})
	a.SetProject(ref("stable"), Project{Owner: "alice", Name: "p", Created: t0})

	var wg sync.WaitGroup
	var failures sync.Map
	for w := range 4 {
		wg.Go(func() {
			for i := range 500 {
				r := ref(fmt.Sprintf("w%d-%d", w, i%10))
				fp := fmt.Sprintf("SHA256:%d", i%7)
				a.SetKey(r, Key{Fingerprint: fp, User: "u", Created: t1})
				a.SetProject(r, Project{Owner: "o", Name: fmt.Sprint(i % 5), Members: map[string]Role{"u": RoleRead}, Created: t1})
				if i%3 == 0 {
					a.RemoveKey(r)
					a.RemoveProject(r)
				}
			}
		})
	}
	for range 8 {
		wg.Go(func() {
			for i := range 2000 {
				if id, ok := a.UserForKey("SHA256:stable"); !ok || id.User != "alice" {
					failures.Store("UserForKey", id)
				}
				if _, ok := a.Authorize(user("alice"), "alice", "p", AccessWrite); !ok {
					failures.Store("Authorize", i)
				}
				a.UserForKey(fmt.Sprintf("SHA256:%d", i%7))
				a.KeyOwner(fmt.Sprintf("SHA256:%d", i%7))
				a.ProjectOwner("o", fmt.Sprint(i%5))
				a.Authorize(user("u"), "o", fmt.Sprint(i%5), AccessRead)
			}
		})
	}
	wg.Wait()
	failures.Range(func(k, v any) bool {
		t.Errorf("%v failed during concurrent writes: %v", k, v)
		return true
	})
	// Every writer's last touch of each ref is a SetKey unless i%3 == 0;
	// either way claims must be consistent with keys.
	for fp, c := range a.claims {
		for _, k := range c {
			g.Expect(a.fingerprints[k.ref]).To(Equal(fp))
		}
	}
	for ref, fp := range a.fingerprints {
		g.Expect(slices.ContainsFunc(a.claims[fp], func(k keyClaim) bool { return k.ref == ref })).To(BeTrue(), "%s has no claim", ref)
	}
}

// Expiry is checked at lookup against the clock, and an expired key comes back under a
// younger object only when that object has an expiry of its own. ClaimWinner, which the
// controller uses for the status, gives the same answer as UserForKey in every case.
func TestKeyExpiry(t *testing.T) {
	type claim struct {
		ref              string
		created, expires time.Time
	}
	never := time.Time{}
	tests := []struct {
		name   string
		claims []claim
		now    time.Time
		want   string // "" = refused
	}{
		{"before its expiry", []claim{{"a", t0, t2}}, t1, "a"},
		{"at its expiry instant", []claim{{"a", t0, t2}}, t2, ""},
		{"after its expiry", []claim{{"a", t0, t1}}, t2, ""},
		{"no expiry", []claim{{"a", t0, never}}, t2.Add(1000 * time.Hour), "a"},
		{"the older live claim wins over a younger one", []claim{{"old", t0, t2}, {"new", t1, never}}, t1, "old"},
		{"re-registered without an expiry after expiry", []claim{{"old", t0, t1}, {"new", t1, never}}, t2, ""},
		{"re-registered with a new expiry", []claim{{"old", t0, t1}, {"new", t1, t2.Add(time.Hour)}}, t2, "new"},
		{"re-registered with an expiry that passed too", []claim{{"old", t0, t1}, {"new", t1, t2}}, t2, ""},
		{"the youngest with an expiry wins past one without",
			[]claim{{"old", t0, t1}, {"mid", t1, never}, {"new", t2, t2.Add(time.Hour)}}, t2, "new"},
		{"an older claim without expiry keeps the key",
			[]claim{{"old", t0, never}, {"new", t1, t1}}, t2, "old"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			a := New()
			a.Now = func() time.Time { return tt.now }
			var claims []Claim
			for _, c := range tt.claims {
				a.SetKey(ref(c.ref), Key{Fingerprint: "SHA256:x", User: c.ref, Created: c.created, Expires: c.expires})
				claims = append(claims, Claim{Ref: ref(c.ref), Created: c.created, Expires: c.expires})
			}
			id, ok := a.UserForKey("SHA256:x")
			winner, winnerOK := ClaimWinner(claims, tt.now)
			expired, expiredOK := a.ExpiredKey("SHA256:x")
			if tt.want == "" {
				g.Expect(ok).To(BeFalse(), "logged in as %v", id)
				g.Expect(winnerOK).To(BeFalse())
				// The refusal is recorded against the oldest claim, whose expiry ended the key.
				g.Expect(expiredOK).To(BeTrue())
				g.Expect(expired).To(Equal(Identity{User: tt.claims[0].ref, Key: ref(tt.claims[0].ref), Fingerprint: "SHA256:x"}))
				return
			}
			g.Expect(expiredOK).To(BeFalse(), "a key that logs in is reported expired: %v", expired)
			g.Expect(ok).To(BeTrue())
			g.Expect(id.Key).To(Equal(ref(tt.want)))
			g.Expect(winnerOK).To(BeTrue())
			g.Expect(winner.Ref).To(Equal(ref(tt.want)))
		})
	}
}

// A key stops logging in at its instant with nothing but the clock moving, and deleting the
// expired object forgets it: the younger object without expiry takes the key (the limit of
// keeping the memory of an expiry in the object itself).
func TestKeyExpiresWithTheClock(t *testing.T) {
	g := NewWithT(t)
	now := t0
	a := New()
	a.Now = func() time.Time { return now }
	a.SetKey(ref("old"), Key{Fingerprint: "SHA256:x", User: "alice", Created: t0, Expires: t1})
	a.SetKey(ref("new"), Key{Fingerprint: "SHA256:x", User: "alice", Created: t1})

	keyOf := func() ObjectRef { id, _ := a.UserForKey("SHA256:x"); return id.Key }
	g.Expect(keyOf()).To(Equal(ref("old")))
	now = t1.Add(-time.Nanosecond)
	g.Expect(keyOf()).To(Equal(ref("old")))
	now = t1
	_, ok := a.UserForKey("SHA256:x")
	g.Expect(ok).To(BeFalse(), "expired key logs in, or the younger one without expiry took it")
	_, ok = a.KeyOwner("SHA256:x")
	g.Expect(ok).To(BeFalse())
	_, ok = a.ExpiredKey("SHA256:unknown")
	g.Expect(ok).To(BeFalse(), "a key nobody registered is not an expired one")

	a.RemoveKey(ref("old"))
	g.Expect(keyOf()).To(Equal(ref("new")))
}

func TestDeployKeyIdentity(t *testing.T) {
	g := NewWithT(t)
	a := New()
	d := &Deploy{Owner: "acme", Name: "api", Access: AccessWrite}
	a.SetKey(ref("ci"), Key{Fingerprint: "SHA256:ci", Deploy: d, Created: t0})
	id, ok := a.UserForKey("SHA256:ci")
	g.Expect(ok).To(BeTrue())
	g.Expect(id).To(Equal(Identity{Deploy: d, Key: ref("ci"), Fingerprint: "SHA256:ci"}))
	g.Expect(id.String()).To(Equal("deploy key for acme/api"))
	g.Expect(user("alice").String()).To(Equal("alice"))
}
