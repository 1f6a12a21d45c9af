package sshserver

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

// objects writes hand-made objects into a scratch repository, so that a push
// can carry what git's porcelain would never write.
type objects struct {
	e    *env
	work string
}

func newObjects(e *env, name string) *objects {
	work := filepath.Join(e.dir, name)
	e.git(e.dir, "init", "-q", "-b", "main", work)
	return &objects{e: e, work: work}
}

// write stores content as an object of type typ, unchecked, and returns its id.
func (o *objects) write(typ string, content []byte) string {
	cmd := exec.Command("git", "hash-object", "-w", "--literally", "-t", typ, "--stdin")
	cmd.Dir = o.work
	cmd.Stdin = bytes.NewReader(content)
	out, err := cmd.Output()
	if err != nil {
		o.e.t.Fatalf("git hash-object -t %s: %v", typ, err)
	}
	return strings.TrimSpace(string(out))
}

func (o *objects) blob(content string) string { return o.write("blob", []byte(content)) }

// entry is one tree entry; mode is written as given ("40000", "040000", "100644").
type entry struct{ mode, name, id string }

// tree writes a tree object with the entries as given: unsorted, duplicated
// or with any name.
func (o *objects) tree(entries ...entry) string {
	var b bytes.Buffer
	for _, en := range entries {
		id, err := hex.DecodeString(en.id)
		if err != nil {
			o.e.t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %s\x00", en.mode, en.name)
		b.Write(id)
	}
	return o.write("tree", b.Bytes())
}

const goodIdent = "A U Thor <author@example.com> 1700000000 +0000"

// commit writes a root commit of tree with the given author line.
func (o *objects) commit(tree, author string) string {
	return o.write("commit", fmt.Appendf(nil, "tree %s\nauthor %s\ncommitter %s\n\nhand-made\n", tree, author, goodIdent))
}

// withReadme wraps entries in a tree that also holds a README, in git's order
// (a tree sorts as if its name ended in "/"), so that only the check under
// test fails.
func (o *objects) withReadme(entries ...entry) string {
	entries = append([]entry{{"100644", "README", o.blob("hi\n")}}, entries...)
	key := func(en entry) string {
		if strings.HasPrefix(strings.TrimLeft(en.mode, "0"), "4") {
			return en.name + "/"
		}
		return en.name
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(key(a), key(b)) })
	return o.tree(entries...)
}

// looseOrPacked lists the files under a repository's objects/ other than
// objects/info: objects, packs, and any quarantine directory left behind.
func looseOrPacked(g *WithT, bare string) []string {
	var files []string
	root := filepath.Join(bare, "objects")
	g.Expect(filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if rel, _ := filepath.Rel(root, p); rel == "info" {
			return filepath.SkipDir
		}
		if !d.IsDir() || strings.Contains(d.Name(), "incoming") {
			files = append(files, p)
		}
		return nil
	})).To(Succeed())
	return files
}

func TestPushedObjectsAreChecked(t *testing.T) {
	e := newEnv(t, Config{})
	o := newObjects(e, "objects")
	bare := filepath.Join(e.dir, "repos", "acme", "api.git")
	blob := o.blob("x\n")
	gitmodules := func(content string) entry { return entry{"100644", ".gitmodules", o.blob(content)} }
	sub := o.tree(entry{"100644", "config", blob})

	refused := []struct {
		name  string
		tree  string
		msgID string
	}{
		{"a tree entry ..", o.withReadme(entry{"40000", "..", sub}), "hasDotdot"},
		{"a tree entry .", o.withReadme(entry{"100644", ".", blob}), "hasDot"},
		{"a tree entry .git", o.withReadme(entry{"40000", ".git", sub}), "hasDotgit"},
		{"a tree entry .GIT (HFS, NTFS)", o.withReadme(entry{"40000", ".GIT", sub}), "hasDotgit"},
		{"a tree entry git~1 (NTFS short name)", o.withReadme(entry{"40000", "git~1", sub}), "hasDotgit"},
		{"a tree entry with a slash", o.withReadme(entry{"100644", "a/b", blob}), "fullPathname"},
		{"duplicate tree entries", o.tree(entry{"100644", "a", blob}, entry{"100644", "a", blob}), "duplicateEntries"},
		{"a .gitmodules URL that is an option", o.withReadme(gitmodules(
			"[submodule \"x\"]\n\tpath = x\n\turl = --upload-pack=touch /tmp/pwned\n")), "gitmodulesUrl"},
		{"a .gitmodules path that is an option", o.withReadme(gitmodules(
			"[submodule \"x\"]\n\tpath = -x\n\turl = https://example.com/x.git\n")), "gitmodulesPath"},
		{"a submodule name that climbs out of .git/modules (CVE-2018-11235)", o.withReadme(gitmodules(
			"[submodule \"../../modules/evil\"]\n\tpath = x\n\turl = https://example.com/x.git\n")), "gitmodulesName"},
		{"a .gitmodules that is a symlink", o.withReadme(entry{"120000", ".gitmodules", o.blob("../../etc/passwd")}), "gitmodulesSymlink"},
		{"a .gitattributes line over 2048 bytes (CVE-2022-23521)", o.withReadme(entry{"100644", ".gitattributes",
			o.blob("*.txt " + strings.Repeat("a", 4096) + "\n")}), "gitattributesLineLength"},
	}
	for _, tt := range refused {
		t.Run("refused: "+tt.name, func(t *testing.T) {
			g := NewWithT(t)
			commit := o.commit(tt.tree, goodIdent)
			out, err := e.gitAs("alice", o.work, "push", e.url("acme/api.git"), commit+":refs/heads/main")
			g.Expect(err).To(HaveOccurred(), out)
			g.Expect(out).To(ContainSubstring(tt.msgID), "git's own message names the check")
			g.Expect(out).To(ContainSubstring("[remote rejected]"))
			g.Expect(e.git(bare, "for-each-ref")).To(BeEmpty(), "no ref moved")
			g.Expect(looseOrPacked(g, bare)).To(BeEmpty(), "no object kept, no quarantine left behind")
		})
	}

	// History written by old tools: it passes, with git's warning.
	passed := []struct {
		name   string
		author string
		tree   string
		msgID  string
	}{
		{"a bad timezone", "A U Thor <author@example.com> 1700000000 +05300", "", "badTimezone"},
		{"a zero-padded date", "A U Thor <author@example.com> 01700000000 +0000", "", "zeroPaddedDate"},
		{"a date that is not a number", "A U Thor <author@example.com> yesterday +0000", "", "badDate"},
		{"no space before the date", "A U Thor <author@example.com>1700000000 +0000", "", "missingSpaceBeforeDate"},
		{"a bad email", "A U Thor <author<@example.com> 1700000000 +0000", "", "badEmail"},
		{"a zero-padded file mode", goodIdent, o.withReadme(entry{"040000", "dir", sub}), "zeroPaddedFilemode"},
	}
	for i, tt := range passed {
		t.Run("passed: "+tt.name, func(t *testing.T) {
			g := NewWithT(t)
			tree := tt.tree
			if tree == "" {
				tree = o.withReadme()
			}
			commit := o.commit(tree, tt.author)
			ref := fmt.Sprintf("refs/heads/legacy-%d", i)
			out, err := e.gitAs("alice", o.work, "push", e.url("acme/api.git"), commit+":"+ref)
			g.Expect(err).NotTo(HaveOccurred(), out)
			g.Expect(out).To(ContainSubstring("warning"))
			g.Expect(out).To(ContainSubstring(tt.msgID))
			g.Expect(strings.TrimSpace(e.git(bare, "rev-parse", ref))).To(Equal(commit))
		})
	}
}

func TestMaxPushSize(t *testing.T) {
	e := newEnv(t, Config{MaxPushSize: 64 << 10})
	g := NewWithT(t)
	bare := filepath.Join(e.dir, "repos", "acme", "api.git")
	work := filepath.Join(e.dir, "work")
	e.git(e.dir, "init", "-q", "-b", "main", work)
	e.git(work, "commit", "-q", "--allow-empty", "-m", "small")

	// Many refs and a small pack: the ref updates are over the limit, the
	// pack is not, and only the pack counts.
	var refs []string
	for i := range 1000 {
		refs = append(refs, fmt.Sprintf("HEAD:refs/heads/a-branch-with-a-long-name-to-make-the-commands-long-%04d", i))
	}
	out, err := e.gitAs("alice", work, append([]string{"push", "-q", e.url("acme/api.git"), "HEAD:main"}, refs...)...)
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).NotTo(ContainSubstring("gitssh:"))
	before, objectsBefore := e.git(bare, "for-each-ref"), looseOrPacked(g, bare)

	// 256 KiB of random data does not compress below the 64 KiB limit; small
	// enough for unpack-objects, so index-pack's path is tried too, by count.
	for _, tt := range []struct {
		name  string
		files int
	}{{"unpack-objects", 1}, {"index-pack", 120}} {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			for i := range tt.files {
				data := make([]byte, (256<<10)/tt.files)
				rand.Read(data)
				g.Expect(os.WriteFile(filepath.Join(work, fmt.Sprintf("random-%d", i)), data, 0o644)).To(Succeed())
			}
			e.git(work, "add", ".")
			e.git(work, "commit", "-q", "-m", "large")
			out, err := e.gitAs("alice", work, "push", e.url("acme/api.git"), "HEAD:main")
			g.Expect(err).To(HaveOccurred(), out)
			g.Expect(out).To(ContainSubstring("pack exceeds maximum allowed size"), "git's own message")
			g.Expect(out).To(ContainSubstring("gitssh: push refused: the pack is larger than this server's limit of 64 KiB (--ssh-max-push-size)"))
			g.Expect(e.git(bare, "for-each-ref")).To(Equal(before), "no ref moved")
			g.Expect(looseOrPacked(g, bare)).To(Equal(objectsBefore), "no object kept, no quarantine left behind")
			e.git(bare, "fsck", "--strict", "--no-dangling")
			e.git(work, "reset", "-q", "--hard", "HEAD~1")
		})
	}
	g.Expect(e.rec.Events()).To(HaveExactElements("login alice", "pushed acme/api", "login alice", "login alice"))
}

func TestPackMeter(t *testing.T) {
	pack := []byte("PACK\x00\x00\x00\x02rest of the pack")
	pkt := func(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }
	for _, tt := range []struct {
		name  string
		input string
	}{
		{"one update", pkt("0000 1111 refs/heads/main\x00report-status") + "0000"},
		{"a payload that looks like PACK", pkt("PACK PACK PACK") + pkt("0000 1111 refs/heads/PACK") + "0000"},
		{"push options after the updates", pkt("0000 1111 refs/heads/main\x00push-options") + "0000" + pkt("ci.skip") + "0000"},
		{"no updates", "0000"},
	} {
		for _, chunk := range []int{1, 3, 4, 5, 1 << 20} {
			t.Run(fmt.Sprintf("%s/chunks of %d", tt.name, chunk), func(t *testing.T) {
				g := NewWithT(t)
				var m packMeter
				in := append([]byte(tt.input), pack...)
				for len(in) > 0 {
					k := min(chunk, len(in))
					n, err := m.Write(in[:k])
					g.Expect(err).NotTo(HaveOccurred())
					g.Expect(n).To(Equal(k))
					in = in[k:]
				}
				g.Expect(m.Bytes()).To(BeEquivalentTo(len(pack)))
			})
		}
	}
}

// TestPlantedGitConfigHasNoEffect plants settings where git would read them
// by default: ~/.gitconfig, $XDG_CONFIG_HOME/git/config, the system file (an
// image's /etc/gitconfig, here through a git wrapper that sets
// GIT_CONFIG_SYSTEM), and the repository's own config and hooks/. None may
// turn off the checks, run a command, or refuse what gitssh allows.
func TestPlantedGitConfigHasNoEffect(t *testing.T) {
	dir := t.TempDir()
	ran := filepath.Join(dir, "ran")
	hook := filepath.Join(dir, "hook")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(hook, fmt.Appendf(nil, "#!/bin/sh\necho \"$0 $*\" >> %s\n[ \"$1\" = git ] && exec \"$@\"\nexit 0\n", ran), 0o755))
	hooks := filepath.Join(dir, "hooks")
	must(os.MkdirAll(hooks, 0o755))
	for _, h := range []string{"pre-receive", "update", "post-receive", "post-update", "reference-transaction"} {
		must(os.Symlink(hook, filepath.Join(hooks, h)))
	}
	planted := fmt.Sprintf(`[core]
	hooksPath = %s
[receive]
	fsckObjects = false
	denyDeletes = true
	maxInputSize = 1
[transfer]
	fsckObjects = false
[uploadpack]
	packObjectsHook = %s
[alias]
	receive-pack = !touch %s
`, hooks, hook, ran)
	home := filepath.Join(dir, "home")
	must(os.MkdirAll(filepath.Join(home, ".config", "git"), 0o755))
	must(os.WriteFile(filepath.Join(home, ".gitconfig"), []byte(planted), 0o644))
	must(os.WriteFile(filepath.Join(home, ".config", "git", "config"), []byte(planted), 0o644))
	system := filepath.Join(dir, "gitconfig")
	must(os.WriteFile(system, []byte(planted), 0o644))
	gitPath, err := exec.LookPath("git")
	must(err)
	wrapper := filepath.Join(dir, "git-with-system-config")
	must(os.WriteFile(wrapper, fmt.Appendf(nil, "#!/bin/sh\nGIT_CONFIG_SYSTEM=%s exec %s \"$@\"\n", system, gitPath), 0o755))
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	// And in gitssh's own environment, which git must not inherit.
	t.Setenv("GIT_CONFIG_SYSTEM", system)
	t.Setenv("GIT_CONFIG_GLOBAL", filepath.Join(home, ".gitconfig"))
	t.Setenv("GIT_CONFIG_PARAMETERS", "'core.hooksPath'='"+hooks+"'")

	e := newEnv(t, Config{GitBinary: wrapper})
	g := NewWithT(t)
	bare := filepath.Join(e.dir, "repos", "acme", "api.git")
	// The repository's own config may hold the operator's settings, but not
	// override gitssh's.
	for _, kv := range [][2]string{{"core.hooksPath", hooks}, {"receive.fsckObjects", "false"}, {"receive.maxInputSize", "1"},
		{"receive.fsck.hasDotdot", "ignore"}} {
		e.git(bare, "config", kv[0], kv[1])
	}
	must(os.Symlink(hook, filepath.Join(bare, "hooks", "post-receive")))

	work := filepath.Join(e.dir, "work")
	e.git(e.dir, "init", "-q", "-b", "main", work)
	e.git(work, "commit", "-q", "--allow-empty", "-m", "x")
	out, err := e.gitAs("alice", work, "push", e.url("acme/api.git"), "HEAD:main", "HEAD:refs/heads/old")
	g.Expect(err).NotTo(HaveOccurred(), "receive.maxInputSize is ours: "+out)
	out, err = e.gitAs("alice", work, "push", e.url("acme/api.git"), ":refs/heads/old")
	g.Expect(err).NotTo(HaveOccurred(), "receive.denyDeletes is not set: "+out)
	out, err = e.gitAs("alice", e.dir, "clone", e.url("acme/api.git"), filepath.Join(e.dir, "clone"))
	g.Expect(err).NotTo(HaveOccurred(), out)

	o := newObjects(e, "objects")
	bad := o.commit(o.withReadme(entry{"100644", "..", o.blob("x")}), goodIdent)
	out, err = e.gitAs("alice", o.work, "push", e.url("acme/api.git"), bad+":refs/heads/bad")
	g.Expect(err).To(HaveOccurred(), "fsck stays on: "+out)
	g.Expect(out).To(ContainSubstring("hasDotdot"))

	g.Expect(ran).NotTo(BeAnExistingFile(), "no planted hook, pack-objects hook or alias ran")
}

func TestGitHooksDir(t *testing.T) {
	e := newEnvWithHooks(t, Config{})
	g := NewWithT(t)
	ran := filepath.Join(e.dir, "ran")
	g.Expect(os.WriteFile(filepath.Join(e.hooks, "post-receive"), fmt.Appendf(nil, "#!/bin/sh\ncat > %s\n", ran), 0o755)).To(Succeed())
	work := filepath.Join(e.dir, "work")
	e.git(e.dir, "init", "-q", "-b", "main", work)
	e.git(work, "commit", "-q", "--allow-empty", "-m", "x")
	out, err := e.gitAs("alice", work, "push", e.url("acme/api.git"), "HEAD:main")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(os.ReadFile(ran)).To(ContainSubstring("refs/heads/main"), "the operator's hook ran")

	_, err = New(Config{GitHooksDir: "hooks"}, hostSigners, e.auth, nil, e.srv.log)
	g.Expect(err).To(MatchError(ContainSubstring("GitHooksDir must be an absolute path")))
}

// TestRepositoryOwnedByAnotherUser: the volume's files may belong to another
// uid (a restored backup, a changed runAsUser); git refuses such a repository
// unless it is a safe.directory.
func TestRepositoryOwnedByAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the repository to another uid")
	}
	e := newEnv(t, Config{})
	g := NewWithT(t)
	bare := filepath.Join(e.dir, "repos", "acme", "api.git")
	g.Expect(filepath.WalkDir(bare, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, 4242, 4242)
	})).To(Succeed())
	work := filepath.Join(e.dir, "work")
	e.git(e.dir, "init", "-q", "-b", "main", work)
	e.git(work, "commit", "-q", "--allow-empty", "-m", "x")
	out, err := e.gitAs("alice", work, "push", e.url("acme/api.git"), "HEAD:main")
	g.Expect(err).NotTo(HaveOccurred(), out)
	out, err = e.gitAs("bob", e.dir, "ls-remote", e.url("acme/api.git"))
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring("refs/heads/main"))
}

// TestFetchByObjectID pins the uploadpack decision: protocol v2 serves any
// object by id, and v0 does the same rather than pretend otherwise.
func TestFetchByObjectID(t *testing.T) {
	e := newEnv(t, Config{})
	g := NewWithT(t)
	work := filepath.Join(e.dir, "work")
	e.git(e.dir, "init", "-q", "-b", "main", work)
	e.git(work, "commit", "-q", "--allow-empty", "-m", "secret")
	gone := strings.TrimSpace(e.git(work, "rev-parse", "HEAD"))
	out, err := e.gitAs("alice", work, "push", e.url("acme/api.git"), "HEAD:main")
	g.Expect(err).NotTo(HaveOccurred(), out)
	e.git(work, "commit", "-q", "--amend", "--allow-empty", "-m", "clean")
	out, err = e.gitAs("alice", work, "push", "--force", e.url("acme/api.git"), "HEAD:main")
	g.Expect(err).NotTo(HaveOccurred(), out)

	for _, v := range []string{"0", "2"} {
		fetch := filepath.Join(e.dir, "fetch-v"+v)
		e.git(e.dir, "init", "-q", fetch)
		out, err := e.gitAs("bob", fetch, "-c", "protocol.version="+v, "fetch", e.url("acme/api.git"), gone)
		g.Expect(err).NotTo(HaveOccurred(), "protocol v%s: %s", v, out)
	}
}
