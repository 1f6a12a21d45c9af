package sshserver

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr/testr"
	. "github.com/onsi/gomega"

	"github.com/gitssh-dev/gitssh/internal/authorizer"
)

// pushLimit is the smaller of the server's limit and what is left of the repository's
// quota, and refuses outright once the quota is reached.
func TestPushLimitWithQuota(t *testing.T) {
	repo := t.TempDir()
	if err := os.WriteFile(filepath.Join(repo, "pack"), make([]byte, 300<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	const server = "this server's limit of 1 GiB (--ssh-max-push-size)"
	for _, tc := range []struct {
		name        string
		maxPushSize int64
		quota       int64
		limit       int64
		what        string
	}{
		{"no quota", 1 << 30, 0, 1 << 30, server},
		{"no quota, no server limit", -1, 0, 0, ""},
		{"less left of the quota than the server allows", 1 << 30, 1 << 20, 724 << 10, "the remaining 724 KiB of the repository's 1 MiB quota (GitProject spec.quota)"},
		{"more left of the quota than the server allows", 100 << 10, 1 << 20, 100 << 10, "this server's limit of 100 KiB (--ssh-max-push-size)"},
		{"quota, no server limit", -1, 1 << 20, 724 << 10, "the remaining 724 KiB of the repository's 1 MiB quota (GitProject spec.quota)"},
		{"exactly at the quota", 1 << 30, 300 << 10, -1, `repository "acme/api" uses 300 KiB of its 300 KiB quota; ask an admin of the project to raise spec.quota of its GitProject`},
		{"over the quota", -1, 200 << 10, -1, `repository "acme/api" uses 300 KiB of its 200 KiB quota; ask an admin of the project to raise spec.quota of its GitProject`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			cfg, err := Config{MaxPushSize: tc.maxPushSize}.withDefaults()
			g.Expect(err).NotTo(HaveOccurred())
			s := &Server{cfg: cfg, log: testr.New(t)}
			limit, what := s.pushLimit(Repository{Path: repo, Owner: "acme", Name: "api", Quota: tc.quota})
			g.Expect(limit).To(Equal(tc.limit))
			g.Expect(what).To(Equal(tc.what))
		})
	}
}

// Over real ssh: a push larger than what is left of the quota is refused with a message
// that names the quota and leaves nothing behind; once the repository has reached its
// quota, every push is refused before git runs, while clones still work.
func TestPushesAgainstTheQuota(t *testing.T) {
	e := newEnv(t, Config{})
	g := NewWithT(t)
	bare := filepath.Join(e.dir, "repos", "acme", "api.git")
	setQuota := func(quota int64) {
		e.auth.SetProject(authorizer.ObjectRef{Namespace: "default", Name: "api"},
			authorizer.Project{Owner: "acme", Name: "api", RepositoryPath: bare, Quota: quota,
				Members: map[string]authorizer.Role{"alice": authorizer.RoleAdmin}})
	}
	setQuota(1 << 20)
	work := filepath.Join(e.dir, "work")
	e.git(e.dir, "init", "-q", "-b", "main", work)
	commit := func(name string, size int) {
		writeRandom(g, filepath.Join(work, name), size)
		e.git(work, "add", name)
		e.git(work, "commit", "-q", "-m", name)
	}

	commit("fits", 300<<10)
	out, err := e.gitAs("alice", work, "push", e.url("acme/api.git"), "main")
	g.Expect(err).NotTo(HaveOccurred(), out)
	stored := e.git(bare, "rev-parse", "main")
	files := looseOrPacked(g, bare)

	commit("too-big", 900<<10)
	out, err = e.gitAs("alice", work, "push", e.url("acme/api.git"), "main")
	g.Expect(err).To(HaveOccurred(), out)
	// 1 MiB less the first push, stored as a pack with its index (receive.unpackLimit=1).
	g.Expect(out).To(MatchRegexp(`gitssh: push refused: the pack is larger than the remaining [67]\d\d(\.\d)? KiB of the repository's 1 MiB quota \(GitProject spec.quota\)\.`))
	g.Expect(e.git(bare, "rev-parse", "main")).To(Equal(stored))
	g.Expect(looseOrPacked(g, bare)).To(Equal(files), "nothing of the refused push is kept")

	setQuota(200 << 10)
	e.git(work, "reset", "-q", "--hard", "HEAD~1")
	e.git(work, "commit", "-q", "--allow-empty", "-m", "tiny")
	out, err = e.gitAs("alice", work, "push", e.url("acme/api.git"), "main")
	g.Expect(err).To(HaveOccurred(), out)
	g.Expect(out).To(MatchRegexp(`gitssh: push refused: repository "acme/api" uses 3\d\d(\.\d)? KiB of its 200 KiB quota; ask an admin of the project to raise spec.quota of its GitProject\n`))
	g.Expect(out).NotTo(ContainSubstring("remote:"), "git did not run")
	out, err = e.gitAs("alice", e.dir, "clone", e.url("acme/api.git"), filepath.Join(e.dir, "clone"))
	g.Expect(err).NotTo(HaveOccurred(), "cloning is never refused: %s", out)

	setQuota(0)
	out, err = e.gitAs("alice", work, "push", e.url("acme/api.git"), "main")
	g.Expect(err).NotTo(HaveOccurred(), "no quota: %s", out)
	var pushes int
	for _, ev := range e.rec.Events() {
		if ev == "pushed acme/api" {
			pushes++
		}
	}
	g.Expect(pushes).To(Equal(2), "refused pushes are not recorded as pushes")
	g.Eventually(func(g Gomega) {
		g.Expect(gather(g, e.reg)).To(And(
			HaveKeyWithValue(gitCmd("receive-pack", gitOK), 2.0),
			HaveKeyWithValue(gitCmd("receive-pack", gitRefused), 2.0),
			HaveKeyWithValue(tooLargePush, 1.0), // what was left of the quota; the second never ran
		))
	}).Should(Succeed())
}
