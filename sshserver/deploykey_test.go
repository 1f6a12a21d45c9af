package sshserver

import (
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/gitssh-dev/gitssh/internal/authorizer"
)

// A deploy key's binding survives the handshake (it travels in the connection's
// Permissions) and decides what the key reaches: its project with its access, nothing
// else, not even a Public project.
func TestDeployKeys(t *testing.T) {
	e := newEnv(t, Config{})
	g := NewWithT(t)
	for name, access := range map[string]authorizer.Access{"ci-read": authorizer.AccessRead, "ci-write": authorizer.AccessWrite} {
		e.keys[name] = e.sshKeygen(name)
		e.auth.SetKey(authorizer.ObjectRef{Namespace: "default", Name: name}, authorizer.Key{
			Fingerprint: e.fingerprint(name), Created: time.Now(),
			Deploy: &authorizer.Deploy{Owner: "acme", Name: "api", Access: access},
		})
	}

	stderr, code := e.ssh("ci-read", "-T", "git@127.0.0.1")
	g.Expect(code).To(Equal(1), stderr)
	g.Expect(stderr).To(ContainSubstring("Hi deploy key for acme/api! You've successfully authenticated"))
	g.Eventually(e.rec.Events).Should(ContainElement("login deploy key for acme/api"))

	work := filepath.Join(e.dir, "deploy-work")
	e.git("", "init", "-q", "-b", "main", work)
	e.git(work, "commit", "-q", "--allow-empty", "-m", "first")
	for _, tc := range []struct {
		key, path string
		args      []string
		ok        bool
	}{
		{"ci-read", "acme/api", []string{"ls-remote"}, true},
		{"ci-read", "acme/api", []string{"push"}, false},
		{"ci-read", "acme/pub", []string{"ls-remote"}, false},
		{"ci-write", "acme/api", []string{"push"}, true},
		{"ci-write", "acme/api", []string{"ls-remote"}, true},
		{"ci-write", "acme/pub", []string{"ls-remote"}, false},
		{"ci-write", "acme/pub", []string{"push"}, false},
	} {
		args := append(append([]string{}, tc.args...), e.url(tc.path))
		if tc.args[0] == "push" {
			args = append(args, "HEAD:refs/heads/"+tc.key)
		}
		out, err := e.gitAs(tc.key, work, args...)
		if tc.ok {
			g.Expect(err).NotTo(HaveOccurred(), "%s %v: %s", tc.key, args, out)
		} else {
			g.Expect(err).To(HaveOccurred(), "%s %v: %s", tc.key, args, out)
			g.Expect(out).To(ContainSubstring(`repository "` + tc.path + `" not found or access denied`))
		}
	}
}
