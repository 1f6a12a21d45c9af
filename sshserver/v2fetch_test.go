package sshserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// A repeated v2 clone is answered whole from the cache: no upload-pack
// answers its fetch and no pack-objects runs. A push changes the refs the
// next clone is shown, so it misses; a fetch that negotiates is left to the
// session's upload-pack.
func TestFetchResponseServesRepeatedClones(t *testing.T) {
	ce := newCacheEnv(t, Config{})
	fillHistory(ce.env, "api")
	g := NewWithT(t)
	responses := func(result string) float64 {
		return ce.metric("gitssh_pack_cache_responses_total", "result", result)
	}

	first := filepath.Join(ce.dir, "first")
	ce.clone(g, first)
	g.Expect(responses("miss")).To(Equal(1.0))
	g.Expect(ce.answerRuns()).To(Equal(1))
	g.Expect(ce.packObjectsRuns()).To(Equal(1))

	second := filepath.Join(ce.dir, "second")
	ce.clone(g, second)
	g.Expect(responses("hit")).To(Equal(1.0))
	g.Expect(ce.answerRuns()).To(Equal(1), "the second clone's fetch ran no upload-pack")
	g.Expect(ce.packObjectsRuns()).To(Equal(1))
	g.Expect(ce.git(second, "for-each-ref")).To(Equal(ce.git(first, "for-each-ref")))

	addBranch(ce.env, "newer", 1000)
	third := filepath.Join(ce.dir, "third")
	ce.clone(g, third)
	g.Expect(responses("miss")).To(Equal(2.0), "new refs, a new answer")
	g.Expect(ce.git(third, "branch", "--list", "newer")).To(ContainSubstring("newer"))

	// Haves, negotiated: upload-pack answers.
	before := ce.metric("gitssh_pack_cache_responses_total")
	out, err := ce.gitAs("bob", first, "-c", "protocol.version=2", "fetch", "-q", "origin", "newer:newer")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(ce.metric("gitssh_pack_cache_responses_total")).To(Equal(before))
	out, err = ce.gitAs("", first, "fsck", "--no-progress")
	g.Expect(err).NotTo(HaveOccurred(), out)
}

// pkt is one pkt-line.
func pkt(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }

// rawUploadPack sends stdin to git-upload-pack acme/api in protocol v2 with
// the OpenSSH client, and returns what came back, stdout and stderr, and
// the exit code.
func (ce *cacheEnv) rawUploadPack(stdin string) (stdout, stderr string, code int) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append(ce.sshArgs("bob"), "-o", "SetEnv=GIT_PROTOCOL=version=2", "git@127.0.0.1", "git-upload-pack 'acme/api.git'")
	cmd := exec.CommandContext(ctx, "ssh", args...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		ce.t.Fatal(err)
	}
	return out.String(), "", 0
}

// What upload-pack refuses, the cache refuses too, and keeps nothing of:
// a want the repository does not have, and bytes that are not pkt-lines.
func TestFetchResponseRefusesWhatUploadPackRefuses(t *testing.T) {
	ce := newCacheEnv(t, Config{})
	fillHistory(ce.env, "api")
	g := NewWithT(t)
	lsRefs := pkt("command=ls-refs\n") + pkt("object-format=sha1\n") + "0001" + pkt("ref-prefix HEAD\n") + "0000"
	missing := make([]byte, 20)
	rand.Read(missing)
	fetch := pkt("command=fetch\n") + pkt("object-format=sha1\n") + "0001" + pkt("ofs-delta\n") +
		pkt("want "+hex.EncodeToString(missing)+"\n") + pkt("done\n") + "0000"

	for round := range 2 {
		stdout, _, code := ce.rawUploadPack(lsRefs + fetch)
		g.Expect(stdout).To(ContainSubstring("ERR upload-pack: not our ref " + hex.EncodeToString(missing)))
		g.Expect(code).NotTo(BeZero())
		g.Expect(ce.metric("gitssh_pack_cache_responses_total", "result", "miss")).To(Equal(float64(round+1)), "never kept")
		g.Expect(ce.cachedPacks()).To(BeEmpty())
	}

	stdout, stderr, code := ce.rawUploadPack(lsRefs + "zzzz" + fetch)
	g.Expect(stdout + stderr).To(ContainSubstring("protocol error: bad line length character: zzzz"))
	g.Expect(code).NotTo(BeZero())
	g.Expect(ce.metric("gitssh_pack_cache_responses_total", "result", "miss")).To(Equal(2.0), "not a request")

	// A well-formed one still works.
	head := strings.Fields(ce.git(filepath.Join(ce.dir, "repos", "acme", "api.git"), "rev-parse", "main"))[0]
	good := strings.Replace(fetch, hex.EncodeToString(missing), head, 1)
	stdout, _, code = ce.rawUploadPack(lsRefs + good)
	g.Expect(code).To(BeZero())
	g.Expect(stdout).To(ContainSubstring("packfile\n"))
	g.Expect(stdout).To(HaveSuffix("0000"))
}

// A client that goes away does not take the answer it started with it:
// another that shares it gets it whole, and it stays cached.
func TestFetchResponseOutlivesItsFirstClient(t *testing.T) {
	ce := newCacheEnv(t, Config{})
	fillHistory(ce.env, "api")
	g := NewWithT(t)

	g.Expect(os.WriteFile(ce.hold, nil, 0o600)).To(Succeed())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	quitter := ce.gitCommand(ctx, "bob", ce.dir, "-c", "protocol.version=2", "clone", "-q", "--bare", ce.url("acme/api.git"), filepath.Join(ce.dir, "quitter"))
	quitter.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // git and its ssh
	quitter.Cancel = func() error { return syscall.Kill(-quitter.Process.Pid, syscall.SIGKILL) }
	g.Expect(quitter.Start()).To(Succeed())
	g.Eventually(ce.packObjectsRuns, "30s").Should(Equal(1))
	stays := ce.startClone("acme/api.git", filepath.Join(ce.dir, "stays"))
	g.Eventually(func() float64 { return ce.metric("gitssh_pack_cache_responses_total", "result", "hit") }, "30s").Should(Equal(1.0))

	cancel()
	quitter.Wait()
	g.Eventually(func() float64 { return ce.metric("gitssh_ssh_connections_in_flight") }, "30s").Should(Equal(1.0), "the quitter's connection is closed")
	g.Expect(os.Remove(ce.hold)).To(Succeed())
	g.Expect(<-stays).NotTo(ContainSubstring("clone failed"))
	out, err := ce.gitAs("", filepath.Join(ce.dir, "stays"), "fsck", "--no-progress")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(ce.cachedPacks()).To(HaveLen(2), "the pack and the answer")
	g.Expect(ce.packObjectsRuns()).To(Equal(1))
}

// Which fetches the cache may answer whole, given the ls-refs before them.
func TestFetchCacheable(t *testing.T) {
	req := func(command string, args ...string) request {
		raw := pkt("command="+command+"\n") + pkt("agent=git/2.39.5\n") + "0001"
		for _, a := range args {
			raw += pkt(a + "\n")
		}
		return parseRequest([]byte(raw + "0000"))
	}
	cloneLsRefs := req("ls-refs", "peel", "symrefs", "ref-prefix HEAD", "ref-prefix refs/heads/", "ref-prefix refs/tags/")
	branchLsRefs := req("ls-refs", "ref-prefix refs/heads/main")
	want := "want " + strings.Repeat("a", 40)
	for _, tc := range []struct {
		name   string
		fetch  request
		lsRefs request
		ok     bool
	}{
		{"clone", req("fetch", "thin-pack", "ofs-delta", want, "done"), cloneLsRefs, true},
		{"shallow, filtered", req("fetch", want, "deepen 1", "filter blob:none", "done"), cloneLsRefs, true},
		{"haves, last round", req("fetch", want, "have "+strings.Repeat("b", 40), "done"), cloneLsRefs, true},
		{"a negotiation round", req("fetch", want, "have "+strings.Repeat("b", 40)), cloneLsRefs, false},
		{"want-ref", req("fetch", "want-ref refs/heads/main", "done"), cloneLsRefs, false},
		{"deepen-not", req("fetch", want, "deepen-not refs/heads/old", "done"), cloneLsRefs, false},
		{"packfile URIs", req("fetch", want, "packfile-uris https", "done"), cloneLsRefs, false},
		{"tags followed, all listed", req("fetch", want, "include-tag", "done"), cloneLsRefs, true},
		{"tags followed, none listed", req("fetch", want, "include-tag", "done"), branchLsRefs, false},
		{"tags followed, no prefix", req("fetch", want, "include-tag", "done"), req("ls-refs", "peel"), true},
		{"tags followed, refs/ listed", req("fetch", want, "include-tag", "done"), req("ls-refs", "ref-prefix refs/"), true},
		{"no tags, one branch", req("fetch", want, "done"), branchLsRefs, true},
	} {
		if tc.fetch.command != "fetch" {
			t.Fatalf("%s: parsed command %q", tc.name, tc.fetch.command)
		}
		if got := tc.fetch.cacheable(tc.lsRefs); got != tc.ok {
			t.Errorf("%s: cacheable = %v, want %v (args %q)", tc.name, got, tc.ok, tc.fetch.args)
		}
	}
}
