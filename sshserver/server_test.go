package sshserver

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"

	"github.com/gitssh-dev/gitssh/internal/authorizer"
	"github.com/gitssh-dev/gitssh/internal/hostkeys"
)

// recorder remembers every event.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}
func (r *recorder) LoginSucceeded(id Identity) { r.add("login " + id.String()) }
func (r *recorder) KeyRefused(id Identity)     { r.add("refused " + id.String()) }
func (r *recorder) Pushed(repo Repository)     { r.add("pushed " + repo.Owner + "/" + repo.Name) }
func (r *recorder) Fetched(repo Repository)    { r.add("fetched " + repo.Owner + "/" + repo.Name) }
func (r *recorder) Events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

var (
	hostSignersOnce sync.Once
	hostSigners     []ssh.Signer
)

// env is a running server with repositories acme/api (private: alice owner,
// bob reader) and acme/pub (public), and users alice, bob and carol
// (registered, no role) with ed25519 keys made by ssh-keygen.
type env struct {
	t        testing.TB
	dir      string
	srv      *Server
	auth     *authorizer.Authorizer
	rec      *recorder
	addr     string
	port     string
	keys     map[string]string // user -> private key file
	known    string
	hooks    string               // Config.GitHooksDir
	reg      *prometheus.Registry // Config.Metrics's, this server's own
	serveErr chan error
	logs     logLines
}

// logLines keeps the server's log lines, V(1) included, as funcr prints
// them: "msg"="Accepted login" "remote"="127.0.0.1:40000" ...
type logLines struct {
	mu    sync.Mutex
	lines []string
}

// with returns the lines holding every one of the substrings.
func (l *logLines) with(subs ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
next:
	for _, line := range l.lines {
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

// newEnvWithHooks is newEnv with Config.GitHooksDir set to an empty directory, e.hooks.
func newEnvWithHooks(t testing.TB, cfg Config) *env {
	cfg.GitHooksDir = t.TempDir()
	return newEnv(t, cfg)
}

func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	for _, bin := range []string{"git", "ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed", bin)
		}
	}
	g := NewWithT(t)
	hostSignersOnce.Do(func() {
		pems, err := hostkeys.Generate()
		if err == nil {
			hostSigners, err = hostkeys.Load(pems)
		}
		if err != nil {
			panic(err)
		}
	})
	e := &env{t: t, dir: t.TempDir(), auth: authorizer.New(), rec: &recorder{}, keys: map[string]string{}, hooks: cfg.GitHooksDir, serveErr: make(chan error, 1)}
	created := time.Now()
	for _, u := range []string{"alice", "bob", "carol", "stranger"} {
		e.keys[u] = e.sshKeygen(u)
		if u == "stranger" {
			continue
		}
		e.auth.SetKey(authorizer.ObjectRef{Namespace: "default", Name: u + "-key"},
			authorizer.Key{Fingerprint: e.fingerprint(u), User: u, Created: created})
	}
	for _, p := range []struct {
		name string
		vis  authorizer.Visibility
	}{{"api", authorizer.Private}, {"pub", authorizer.Public}} {
		path := filepath.Join(e.dir, "repos", "acme", p.name+".git")
		e.git("", "init", "--bare", "-q", "-b", "main", path)
		e.auth.SetProject(authorizer.ObjectRef{Namespace: "default", Name: p.name},
			authorizer.Project{Owner: "acme", Name: p.name, Visibility: p.vis, RepositoryPath: path,
				Members: map[string]authorizer.Role{"alice": authorizer.RoleAdmin, "bob": authorizer.RoleRead}})
	}
	log := logr.Discard() // benchmarks
	if tt, ok := t.(*testing.T); ok {
		log = funcr.New(func(prefix, args string) {
			tt.Log(prefix, args)
			e.logs.mu.Lock()
			e.logs.lines = append(e.logs.lines, args)
			e.logs.mu.Unlock()
		}, funcr.Options{Verbosity: 1})
	}
	if cfg.Metrics == nil {
		e.reg = prometheus.NewRegistry()
		cfg.Metrics = NewMetrics(e.reg)
	}
	srv, err := New(cfg, hostSigners, e.auth, e.rec, log)
	g.Expect(err).NotTo(HaveOccurred())
	e.srv = srv
	l, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	e.addr = l.Addr().String()
	_, e.port, _ = net.SplitHostPort(e.addr)
	e.known = filepath.Join(e.dir, "known_hosts")
	g.Expect(os.WriteFile(e.known, hostkeys.KnownHosts("[127.0.0.1]:"+e.port, hostSigners), 0o600)).To(Succeed())
	go func() { e.serveErr <- srv.Serve(l) }()
	g.Eventually(srv.Serving).Should(BeTrue())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return e
}

func (e *env) sshKeygen(name string) string {
	p := filepath.Join(e.dir, "id_"+name)
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", p).CombinedOutput()
	if err != nil {
		e.t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	return p
}

func (e *env) publicKey(user string) ssh.PublicKey {
	b, err := os.ReadFile(e.keys[user] + ".pub")
	if err != nil {
		e.t.Fatal(err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

func (e *env) fingerprint(user string) string { return ssh.FingerprintSHA256(e.publicKey(user)) }

func (e *env) signer(user string) ssh.Signer {
	b, err := os.ReadFile(e.keys[user])
	if err != nil {
		e.t.Fatal(err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *env) sshArgs(user string) []string {
	var id []string
	if user != "" {
		id = []string{"-i", e.keys[user]}
	}
	return append(id, "-F", "/dev/null", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile="+e.known, "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=20", "-p", e.port)
}

func (e *env) url(path string) string { return "ssh://git@127.0.0.1:" + e.port + "/" + path }

// gitAs runs git as a user in dir; it returns combined output and the error.
func (e *env) gitAs(user, dir string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := e.gitCommand(ctx, user, dir, args...).CombinedOutput()
	return string(out), err
}

// gitCommand is git as a user in dir, with the OpenSSH client.
func (e *env) gitCommand(ctx context.Context, user, dir string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+e.dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull, "GIT_CONFIG_PARAMETERS=", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=T", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=T", "GIT_COMMITTER_EMAIL=t@example.com")
	if user != "" {
		cmd.Env = append(cmd.Env, "GIT_SSH_COMMAND=ssh "+strings.Join(e.sshArgs(user), " "))
	}
	return cmd
}

func (e *env) git(dir string, args ...string) string {
	e.t.Helper()
	out, err := e.gitAs("", dir, args...)
	if err != nil {
		e.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return out
}

// ssh runs the OpenSSH client as a user; it returns stderr and the exit code.
func (e *env) ssh(user string, extra ...string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append(e.sshArgs(user), extra...)
	cmd := exec.CommandContext(ctx, "ssh", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdin = strings.NewReader("")
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	return stderr.String(), code
}

// client dials with x/crypto's client, for what the ssh CLI cannot do.
func (e *env) client(user string, auth ...ssh.AuthMethod) (*ssh.Client, error) {
	cb, err := knownHostsCallback(e.known)
	if err != nil {
		return nil, err
	}
	if len(auth) == 0 {
		auth = []ssh.AuthMethod{ssh.PublicKeys(e.signer(user))}
	}
	return ssh.Dial("tcp", e.addr, &ssh.ClientConfig{User: "git", Auth: auth, HostKeyCallback: cb, Timeout: 20 * time.Second})
}

func knownHostsCallback(file string) (ssh.HostKeyCallback, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	for len(b) > 0 {
		_, _, k, _, rest, err := ssh.ParseKnownHosts(b)
		if err != nil {
			break
		}
		keys = append(keys, k.Marshal())
		b = rest
	}
	return func(_ string, _ net.Addr, key ssh.PublicKey) error {
		for _, k := range keys {
			if bytes.Equal(k, key.Marshal()) {
				return nil
			}
		}
		return errors.New("unknown host key")
	}, nil
}

// run runs one exec request with the Go client; it returns stderr and the exit status.
func run(g *WithT, c *ssh.Client, command string) (string, int) {
	s, err := c.NewSession()
	g.Expect(err).NotTo(HaveOccurred())
	defer s.Close()
	var stderr bytes.Buffer
	s.Stderr = &stderr
	err = s.Run(command)
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return stderr.String(), ee.ExitStatus()
	}
	g.Expect(err).NotTo(HaveOccurred())
	return stderr.String(), 0
}

func TestCloneFetchPush(t *testing.T) {
	e := newEnv(t, Config{})
	g := NewWithT(t)
	work := filepath.Join(e.dir, "work")

	out, err := e.gitAs("alice", e.dir, "clone", e.url("acme/api.git"), work)
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(os.WriteFile(filepath.Join(work, "README"), []byte("hello\n"), 0o644)).To(Succeed())
	e.git(work, "add", "README")
	e.git(work, "commit", "-q", "-m", "first")
	out, err = e.gitAs("alice", work, "push", "origin", "HEAD:main", "HEAD:refs/heads/feature")
	g.Expect(err).NotTo(HaveOccurred(), out)
	e.git(work, "tag", "v1")
	out, err = e.gitAs("alice", work, "push", "origin", "v1")
	g.Expect(err).NotTo(HaveOccurred(), out)
	out, err = e.gitAs("alice", work, "push", "origin", ":feature")
	g.Expect(err).NotTo(HaveOccurred(), out)

	bare := filepath.Join(e.dir, "repos", "acme", "api.git")
	refs := e.git(bare, "for-each-ref", "--format=%(refname)")
	g.Expect(strings.Fields(refs)).To(ConsistOf("refs/heads/main", "refs/tags/v1"))

	// Without .git, scp-like syntax, fetch by another reader.
	clone2 := filepath.Join(e.dir, "clone2")
	out, err = e.gitAs("bob", e.dir, "clone", "git@127.0.0.1:acme/api", clone2) // port from GIT_SSH_COMMAND
	g.Expect(err).NotTo(HaveOccurred(), out)
	clone3 := filepath.Join(e.dir, "clone3")
	out, err = e.gitAs("bob", e.dir, "clone", e.url("acme/api"), clone3)
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(os.ReadFile(filepath.Join(clone2, "README"))).To(Equal([]byte("hello\n")))
	out, err = e.gitAs("bob", clone2, "fetch", "--tags", "origin")
	g.Expect(err).NotTo(HaveOccurred(), out)

	// Protocol v2 needs GIT_PROTOCOL to reach git.
	out, err = e.gitAs("bob", e.dir, "-c", "protocol.version=2", "-c", "trace2.eventTarget=", "ls-remote", e.url("acme/api.git"))
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring("refs/heads/main"))
	cmd := exec.Command("git", "-c", "protocol.version=2", "ls-remote", e.url("acme/api.git"))
	cmd.Env = append(os.Environ(), "HOME="+e.dir, "GIT_TRACE_PACKET=1", "GIT_SSH_COMMAND=ssh "+strings.Join(e.sshArgs("bob"), " "))
	trace, err := cmd.CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), string(trace))
	g.Expect(string(trace)).To(ContainSubstring("< version 2"), "the server must speak protocol v2")

	// git archive --remote runs git-upload-archive.
	cmd = exec.Command("git", "archive", "--remote", e.url("acme/api.git"), "--format=tar", "main")
	cmd.Env = append(os.Environ(), "HOME="+e.dir, "GIT_SSH_COMMAND=ssh "+strings.Join(e.sshArgs("bob"), " "))
	tarball, err := cmd.Output()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(tarball)).To(ContainSubstring("README"))

	g.Expect(e.rec.Events()).To(ContainElements("login alice", "pushed acme/api", "login bob", "fetched acme/api"))
}

func TestAccessRules(t *testing.T) {
	e := newEnv(t, Config{})
	g := NewWithT(t)
	work := filepath.Join(e.dir, "work")
	e.git(e.dir, "init", "-q", "-b", "main", work)
	e.git(work, "commit", "-q", "--allow-empty", "-m", "x")

	out, err := e.gitAs("bob", work, "push", e.url("acme/api.git"), "HEAD:main")
	g.Expect(err).To(HaveOccurred(), "bob is a reader")
	g.Expect(out).To(ContainSubstring(`repository "acme/api" not found or access denied`))

	out, err = e.gitAs("carol", e.dir, "ls-remote", e.url("acme/api.git"))
	g.Expect(err).To(HaveOccurred(), "carol is no member of a private project")
	g.Expect(out).To(ContainSubstring(`repository "acme/api" not found or access denied`))

	out, err = e.gitAs("alice", e.dir, "ls-remote", e.url("acme/missing.git"))
	g.Expect(err).To(HaveOccurred())
	g.Expect(out).To(ContainSubstring(`repository "acme/missing" not found or access denied`), "missing and forbidden look the same")

	out, err = e.gitAs("carol", e.dir, "ls-remote", e.url("acme/pub.git"))
	g.Expect(err).NotTo(HaveOccurred(), "public projects are readable: "+out)
	out, err = e.gitAs("carol", work, "push", e.url("acme/pub.git"), "HEAD:main")
	g.Expect(err).To(HaveOccurred(), "but not writable: "+out)

	g.Expect(e.rec.Events()).To(ContainElement("refused carol"))
	bare := filepath.Join(e.dir, "repos", "acme", "api.git")
	g.Expect(e.git(bare, "for-each-ref")).To(BeEmpty())
}

func TestLoginRefused(t *testing.T) {
	e := newEnv(t, Config{})
	g := NewWithT(t)

	stderr, code := e.ssh("stranger", "-T", "git@127.0.0.1")
	g.Expect(code).To(Equal(255))
	g.Expect(stderr).To(ContainSubstring("Permission denied (publickey)"))

	stderr, code = e.ssh("alice", "-T", "alice@127.0.0.1")
	g.Expect(code).To(Equal(255), "only the configured SSH user may log in")
	g.Expect(stderr).To(ContainSubstring("Permission denied (publickey)"))

	g.Expect(e.rec.Events()).NotTo(ContainElement(HavePrefix("login")))
}

func TestShell(t *testing.T) {
	e := newEnv(t, Config{})
	for _, flag := range []string{"-T", "-tt"} {
		t.Run(flag, func(t *testing.T) {
			g := NewWithT(t)
			stderr, code := e.ssh("alice", flag, "git@127.0.0.1")
			g.Expect(code).To(Equal(1), stderr)
			g.Expect(stderr).To(ContainSubstring("Hi alice! You've successfully authenticated, but gitssh does not provide shell access."))
		})
	}
}

func TestRefusedCommands(t *testing.T) {
	e := newEnv(t, Config{})
	marker := filepath.Join(e.dir, "marker")
	long := strings.Repeat("a", 10000)
	tests := []struct {
		command string
		status  int
		stderr  string
	}{
		{"ls -la", 127, `gitssh: unknown command "ls -la"`},
		{"touch " + marker, 127, "unknown command"},
		{"touch " + marker + " 'acme/api.git'", 127, "unknown command"},
		{"git-upload-pack '--upload-pack=touch " + marker + "'", 128, "invalid repository path"},
		{"git-upload-pack --upload-pack=touch " + marker, 128, "invalid repository path"},
		{"git-upload-pack '../acme/api.git'", 128, "invalid repository path"},
		{"git-upload-pack '/acme/../api.git'", 128, "invalid repository path"},
		{"git-upload-pack '" + filepath.Join(e.dir, "repos", "acme", "api.git") + "'", 128, "invalid repository path"},
		{"git-upload-pack '/etc/passwd'", 128, `repository "etc/passwd" not found or access denied`},
		{"git-upload-pack 'acme/api;touch " + marker + "'", 128, "invalid repository path"},
		{"git-upload-pack 'acme/api.git';touch " + marker, 128, "invalid repository path"},
		{"git-upload-pack 'a'b", 128, "invalid repository path"},
		{"git-upload-pack 'acme/api.git\ntouch " + marker + "'", 128, "invalid repository path"},
		{"git-upload-pack 'acme/api.git\x00'", 128, "invalid repository path"},
		{"git-upload-pack '~/acme/api.git'", 128, "invalid repository path"},
		{"git-upload-pack 'acme/" + long + "'", 128, "bytes)"},
		{long, 127, "bytes)"},
	}
	c, err := e.client("alice")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tt := range tests {
		t.Run(quoteForMessage(tt.command), func(t *testing.T) {
			g := NewWithT(t)
			stderr, status := run(g, c, tt.command)
			g.Expect(status).To(Equal(tt.status))
			g.Expect(stderr).To(ContainSubstring(tt.stderr))
			g.Expect(len(stderr)).To(BeNumerically("<", 500), "long input is truncated")
			g.Expect(marker).NotTo(BeAnExistingFile())
		})
	}

	// The OpenSSH client too.
	g := NewWithT(t)
	stderr, code := e.ssh("alice", "-T", "git@127.0.0.1", "echo", "hi")
	g.Expect(code).To(Equal(127))
	g.Expect(stderr).To(ContainSubstring(`gitssh: unknown command "echo hi"`))
}

func TestForwardingRefused(t *testing.T) {
	e := newEnv(t, Config{})
	g := NewWithT(t)
	other, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	defer other.Close()

	c, err := e.client("alice")
	g.Expect(err).NotTo(HaveOccurred())
	defer c.Close()
	_, err = c.Dial("tcp", other.Addr().String())
	g.Expect(err).To(MatchError(ContainSubstring("gitssh only allows session channels")), "direct-tcpip")
	_, err = c.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).To(HaveOccurred(), "tcpip-forward")

	s, err := c.NewSession()
	g.Expect(err).NotTo(HaveOccurred())
	defer s.Close()
	ok, err := s.SendRequest("auth-agent-req@openssh.com", true, nil)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(ok).To(BeFalse(), "agent forwarding")
	ok, err = s.SendRequest("x11-req", true, ssh.Marshal(struct {
		Single        bool
		Proto, Cookie string
		Screen        uint32
	}{false, "MIT-MAGIC-COOKIE-1", "00", 0}))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(ok).To(BeFalse(), "X11 forwarding")
	g.Expect(s.RequestSubsystem("sftp")).NotTo(Succeed())
	g.Expect(s.Setenv("LD_PRELOAD", "/tmp/x.so")).NotTo(Succeed())
	g.Expect(s.Setenv("GIT_PROTOCOL", "version=2;rm")).NotTo(Succeed())
	g.Expect(s.Setenv("GIT_PROTOCOL", "version=2")).To(Succeed())

	stderr, code := e.ssh("alice", "-N", "-o", "ExitOnForwardFailure=yes", "-L", "127.0.0.1:0:"+other.Addr().String(), "git@127.0.0.1")
	g.Expect(code).To(Equal(255), stderr)
}

// failingSigner offers a registered public key but cannot sign: someone
// holding only the public half.
type failingSigner struct{ ssh.Signer }

func (failingSigner) Sign(io.Reader, []byte) (*ssh.Signature, error) {
	return nil, errors.New("no private key")
}

func TestKeyOfferedWithoutProof(t *testing.T) {
	e := newEnv(t, Config{})
	g := NewWithT(t)
	_, err := e.client("", ssh.PublicKeys(failingSigner{e.signer("alice")}))
	g.Expect(err).To(HaveOccurred())
	g.Eventually(e.rec.Events).Should(ContainElement("refused alice"))
	g.Expect(e.rec.Events()).NotTo(ContainElement("login alice"))

	// OpenSSH offers a key whose private half it lacks, then one it has:
	// the first is refused, the second logs in.
	e2 := newEnv(t, Config{})
	pubOnly := filepath.Join(e2.dir, "pubonly")
	b, err := os.ReadFile(e2.keys["bob"] + ".pub")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(os.WriteFile(pubOnly+".pub", b, 0o600)).To(Succeed())
	stderr, code := e2.ssh("", "-i", pubOnly+".pub", "-i", e2.keys["alice"], "-T", "git@127.0.0.1")
	g.Expect(code).To(Equal(1), stderr)
	g.Expect(stderr).To(ContainSubstring("Hi alice!"))
	g.Eventually(e2.rec.Events).Should(ContainElements("refused bob", "login alice"))
	g.Expect(e2.rec.Events()).NotTo(ContainElement("login bob"))
}

func TestWeakKeysRefused(t *testing.T) {
	e := newEnv(t, Config{})
	g := NewWithT(t)
	for _, bits := range []string{"1024"} {
		p := filepath.Join(e.dir, "id_rsa"+bits)
		out, err := exec.Command("ssh-keygen", "-q", "-t", "rsa", "-b", bits, "-N", "", "-f", p).CombinedOutput()
		g.Expect(err).NotTo(HaveOccurred(), string(out))
		e.keys["weak"] = p
		e.auth.SetKey(authorizer.ObjectRef{Namespace: "default", Name: "weak"},
			authorizer.Key{Fingerprint: e.fingerprint("weak"), User: "weak"})
		stderr, code := e.ssh("weak", "-T", "git@127.0.0.1")
		g.Expect(code).To(Equal(255), "RSA %s bits must be refused", bits)
		g.Expect(stderr).To(ContainSubstring("Permission denied (publickey)"))
	}
	// A registered RSA 3072 key works with rsa-sha2-*, but not with ssh-rsa (SHA-1).
	p := filepath.Join(e.dir, "id_rsa3072")
	out, err := exec.Command("ssh-keygen", "-q", "-t", "rsa", "-b", "3072", "-N", "", "-f", p).CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), string(out))
	e.keys["rsa"] = p
	e.auth.SetKey(authorizer.ObjectRef{Namespace: "default", Name: "rsa"}, authorizer.Key{Fingerprint: e.fingerprint("rsa"), User: "rsa"})
	stderr, code := e.ssh("rsa", "-T", "git@127.0.0.1")
	g.Expect(code).To(Equal(1), stderr)
	stderr, code = e.ssh("rsa", "-o", "PubkeyAcceptedAlgorithms=ssh-rsa", "-T", "git@127.0.0.1")
	g.Expect(code).To(Equal(255), stderr)
}

func TestMaxAuthTries(t *testing.T) {
	e := newEnv(t, Config{MaxAuthTries: 3})
	g := NewWithT(t)
	var signers []ssh.Signer
	for range 4 {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		g.Expect(err).NotTo(HaveOccurred())
		s, err := ssh.NewSignerFromKey(k)
		g.Expect(err).NotTo(HaveOccurred())
		signers = append(signers, s)
	}
	_, err := e.client("", ssh.PublicKeys(append(signers, e.signer("alice"))...))
	g.Expect(err).To(HaveOccurred(), "the good key comes after too many bad ones")
	c, err := e.client("", ssh.PublicKeys(append(signers[:1], e.signer("alice"))...))
	g.Expect(err).NotTo(HaveOccurred(), "within the limit")
	c.Close()
}

// blockingPushSetup installs a pre-receive hook (e must come from newEnvWithHooks) that
// writes its pid to started and waits until release exists, and makes a work repository
// with one commit to push to acme/api.git.
func blockingPushSetup(e *env, g *WithT) (bare, work, started, release string) {
	bare = filepath.Join(e.dir, "repos", "acme", "api.git")
	started, release = filepath.Join(e.dir, "hook-started"), filepath.Join(e.dir, "hook-release")
	hook := fmt.Sprintf("#!/bin/sh\necho $$ > %s\nwhile [ ! -e %s ]; do sleep 0.05; done\n", started, release)
	g.Expect(e.hooks).NotTo(BeEmpty(), "hooks are off unless Config.GitHooksDir is set")
	g.Expect(os.WriteFile(filepath.Join(e.hooks, "pre-receive"), []byte(hook), 0o755)).To(Succeed())
	work = filepath.Join(e.dir, "work")
	e.git(e.dir, "init", "-q", "-b", "main", work)
	e.git(work, "commit", "-q", "--allow-empty", "-m", "x")
	return bare, work, started, release
}

func TestGracefulShutdownLetsPushFinish(t *testing.T) {
	e := newEnvWithHooks(t, Config{})
	g := NewWithT(t)
	bare, work, started, release := blockingPushSetup(e, g)

	pushed := make(chan error, 1)
	go func() {
		out, err := e.gitAs("alice", work, "push", e.url("acme/api.git"), "HEAD:main")
		if err != nil {
			err = fmt.Errorf("%w: %s", err, out)
		}
		pushed <- err
	}()
	g.Eventually(started, 30*time.Second).Should(BeAnExistingFile())

	shutdown := make(chan error, 1)
	go func() { shutdown <- e.srv.Shutdown(context.Background()) }()
	g.Eventually(e.srv.Serving).Should(BeFalse())
	g.Eventually(e.serveErr).Should(Receive(MatchError(ErrServerClosed)))
	_, err := net.Dial("tcp", e.addr)
	g.Expect(err).To(HaveOccurred(), "no new connections")
	g.Consistently(shutdown, 100*time.Millisecond).ShouldNot(Receive(), "a push is running")

	g.Expect(os.WriteFile(release, nil, 0o644)).To(Succeed())
	g.Eventually(pushed, 30*time.Second).Should(Receive(BeNil()))
	g.Eventually(shutdown, 30*time.Second).Should(Receive(BeNil()))
	g.Expect(e.git(bare, "for-each-ref")).To(ContainSubstring("refs/heads/main"))
}

func TestForcedShutdownKillsCommand(t *testing.T) {
	e := newEnvWithHooks(t, Config{})
	g := NewWithT(t)
	_, work, started, _ := blockingPushSetup(e, g)

	pushed := make(chan error, 1)
	var out string
	go func() {
		var err error
		out, err = e.gitAs("alice", work, "push", e.url("acme/api.git"), "HEAD:main")
		pushed <- err
	}()
	g.Eventually(started, 30*time.Second).Should(BeAnExistingFile())
	pid := readPid(g, started)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	g.Expect(e.srv.Shutdown(ctx)).To(MatchError(context.Canceled))
	g.Eventually(pushed, 30*time.Second).Should(Receive(HaveOccurred()))
	g.Expect(out).To(ContainSubstring("gitssh: the server is shutting down and stopped this git command before it finished; run it again."))
	g.Eventually(func() bool { return processAlive(pid) }, 10*time.Second).Should(BeFalse(), "the hook is in git's process group")
}

func TestClientGoneKillsCommand(t *testing.T) {
	e := newEnvWithHooks(t, Config{})
	g := NewWithT(t)
	bare, work, started, _ := blockingPushSetup(e, g)

	c, err := e.client("alice")
	g.Expect(err).NotTo(HaveOccurred())
	s, err := c.NewSession()
	g.Expect(err).NotTo(HaveOccurred())
	stdin, err := s.StdinPipe()
	g.Expect(err).NotTo(HaveOccurred())
	stdout, err := s.StdoutPipe()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(s.Start("git-receive-pack '/acme/api.git'")).To(Succeed())
	// Speak just enough receive-pack protocol to start the hook: one
	// ref update and its pack.
	adv := make([]byte, 4)
	_, err = io.ReadFull(stdout, adv)
	g.Expect(err).NotTo(HaveOccurred())
	go io.Copy(io.Discard, stdout)
	commit := strings.TrimSpace(e.git(work, "rev-parse", "HEAD"))
	pack := exec.Command("git", "pack-objects", "--stdout", "--revs")
	pack.Dir = work
	pack.Stdin = strings.NewReader(commit + "\n")
	packData, err := pack.Output()
	g.Expect(err).NotTo(HaveOccurred())
	line := fmt.Sprintf("%s %s refs/heads/main\x00 report-status", strings.Repeat("0", 40), commit)
	fmt.Fprintf(stdin, "%04x%s0000", len(line)+4, line)
	stdin.Write(packData)
	g.Eventually(started, 30*time.Second).Should(BeAnExistingFile())
	pid := readPid(g, started)

	c.Close() // the client goes away mid-push
	g.Eventually(func() bool { return processAlive(pid) }, 10*time.Second).Should(BeFalse())
	g.Expect(e.git(bare, "for-each-ref")).To(BeEmpty())
}

func readPid(g *WithT, file string) int {
	var pid int
	g.Eventually(func() error {
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		_, err = fmt.Sscan(string(b), &pid)
		return err
	}).Should(Succeed())
	return pid
}

func processAlive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	if p.Signal(syscallZero) != nil {
		return false
	}
	// A zombie still answers signal 0; look at its state.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b))
	return len(fields) > 2 && fields[2] != "Z"
}

var syscallZero = syscall.Signal(0)

// rawClient logs in as alice with x/crypto and hands back the connection's
// global requests unanswered.
func (e *env) rawClient(g *WithT) (ssh.Conn, <-chan ssh.NewChannel, <-chan *ssh.Request) {
	cb, err := knownHostsCallback(e.known)
	g.Expect(err).NotTo(HaveOccurred())
	nc, err := net.Dial("tcp", e.addr)
	g.Expect(err).NotTo(HaveOccurred())
	c, chans, reqs, err := ssh.NewClientConn(nc, e.addr, &ssh.ClientConfig{User: "git",
		Auth: []ssh.AuthMethod{ssh.PublicKeys(e.signer("alice"))}, HostKeyCallback: cb, Timeout: 20 * time.Second})
	g.Expect(err).NotTo(HaveOccurred())
	return c, chans, reqs
}

// waitClosed waits for the server to close c, bounded by a watchdog.
func waitClosed(g *WithT, c ssh.Conn) {
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	watchdog := time.AfterFunc(30*time.Second, func() { c.Close() })
	defer watchdog.Stop()
	<-done
	g.Expect(watchdog.Stop()).To(BeTrue(), "the server must close the connection, not our watchdog")
}

func TestIdleTimeout(t *testing.T) {
	e := newEnv(t, Config{IdleTimeout: 100 * time.Millisecond, KeepaliveInterval: -1})
	g := NewWithT(t)
	c, _, reqs := e.rawClient(g)
	go ssh.DiscardRequests(reqs)
	waitClosed(g, c)
}

func TestKeepalive(t *testing.T) {
	e := newEnv(t, Config{KeepaliveInterval: 50 * time.Millisecond, KeepaliveCountMax: 2, IdleTimeout: -1})
	g := NewWithT(t)

	c, _, reqs := e.rawClient(g)
	var r *ssh.Request
	g.Eventually(reqs, 10*time.Second).Should(Receive(&r))
	g.Expect(r.Type).To(Equal("keepalive@openssh.com"))
	g.Expect(r.WantReply).To(BeTrue())
	// Never answer: the server gives up on us.
	go func() {
		for range reqs {
		}
	}()
	waitClosed(g, c)

	// A client that answers stays, well past KeepaliveCountMax intervals.
	c2, chans, reqs2 := e.rawClient(g)
	defer c2.Close()
	go func() {
		for range chans {
		}
	}()
	for range 5 {
		g.Eventually(reqs2, 10*time.Second).Should(Receive(&r))
		g.Expect(r.Reply(false, nil)).To(Succeed())
	}
	client := ssh.NewClient(c2, make(chan ssh.NewChannel), reqs2)
	stderr, code := run(g, client, "nope")
	g.Expect(code).To(Equal(127), stderr)
}

func TestMaxSessionDuration(t *testing.T) {
	e := newEnvWithHooks(t, Config{MaxSessionDuration: 300 * time.Millisecond})
	g := NewWithT(t)
	bare, work, started, _ := blockingPushSetup(e, g)
	out, err := e.gitAs("alice", work, "push", e.url("acme/api.git"), "HEAD:main")
	g.Expect(err).To(HaveOccurred(), out)
	pid := readPid(g, started)
	g.Eventually(func() bool { return processAlive(pid) }, 10*time.Second).Should(BeFalse())
	g.Expect(e.git(bare, "for-each-ref")).To(BeEmpty())
}

func TestMaxConns(t *testing.T) {
	e := newEnv(t, Config{MaxConns: 1})
	g := NewWithT(t)
	c, err := e.client("alice")
	g.Expect(err).NotTo(HaveOccurred())
	defer c.Close()
	_, err = e.client("alice")
	g.Expect(err).To(HaveOccurred(), "over MaxConns")
	c.Close()
	g.Eventually(func() error {
		c, err := e.client("alice")
		if err == nil {
			c.Close()
		}
		return err
	}, 10*time.Second).Should(Succeed(), "a slot frees up when a connection closes")
}
