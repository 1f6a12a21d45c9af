package packcache

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

func TestNewDropsFilesOfAPreviousRun(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	for _, f := range []string{"0123abcd.pack", "tmp-42.pack", socketName} {
		g.Expect(os.WriteFile(filepath.Join(dir, f), []byte("PACK from before"), 0o600)).To(Succeed())
	}
	c, err := New(Config{Dir: dir, Command: func(context.Context, string, []string) *exec.Cmd { return nil }})
	g.Expect(err).NotTo(HaveOccurred())
	defer c.Close()
	left, _ := filepath.Glob(filepath.Join(dir, "*.pack"))
	g.Expect(left).To(BeEmpty())
}

func TestCacheable(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"pack-objects", "--revs", "--thin", "--stdout", "--progress", "--delta-base-offset"}, true},
		{[]string{"--shallow-file", "", "pack-objects", "--revs", "--thin", "--stdout", "--shallow", "--include-tag", "--filter=blob:none"}, true},
		{[]string{"--shallow-file", "/etc/passwd", "pack-objects", "--revs", "--stdout"}, false},
		{[]string{"pack-objects", "--revs", "--stdout", "--shallow-file", ""}, false},
		{[]string{"-c", "x=y", "pack-objects", "--revs", "--stdout"}, false},
		{[]string{"pack-objects", "--revs", "--stdout", "--uri-protocol=https"}, false},
		{[]string{"pack-objects", "--revs", "pack-base"}, false},
		{[]string{"rev-list", "--stdout"}, false},
		{nil, false},
	} {
		if got := cacheable(tc.args); got != tc.want {
			t.Errorf("cacheable(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

func TestNewRefusesAHookGitWouldHandToAShell(t *testing.T) {
	g := NewWithT(t)
	cmd := func(context.Context, string, []string) *exec.Cmd { return nil }
	for _, hook := range []string{"relative/gitssh", "/opt/git ssh", "/bin/gitssh;rm"} {
		_, err := New(Config{Dir: t.TempDir(), HookBinary: hook, Command: cmd})
		g.Expect(err).To(MatchError(ContainSubstring("absolute path without spaces or shell characters")), hook)
	}
}

func TestHookBeside(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	exe := filepath.Join(dir, "gitssh")
	g.Expect(hookBeside(exe)).To(Equal(exe), "no hook installed")
	hook := filepath.Join(dir, HookName)
	g.Expect(os.WriteFile(hook, nil, 0o644)).To(Succeed())
	g.Expect(hookBeside(exe)).To(Equal(exe), "not executable")
	g.Expect(os.Chmod(hook, 0o755)).To(Succeed())
	g.Expect(hookBeside(exe)).To(Equal(hook))
}

// streamTo follows a pack growing as watchGrowth sees it into a pipe
// (spliced) and into anything else (mapped and written: from the entry's
// shared view as far as it was expected to grow, needs, and chunk by chunk
// past that), and ends with the writer.
func TestStreamToFollowsTheWriter(t *testing.T) {
	for _, tc := range []struct {
		dest  string
		needs int64
	}{{"pipe", 1 << 20}, {"file", 0}, {"file", 1 << 20}, {"file", 8 << 20}} {
		dest := tc.dest
		t.Run(fmt.Sprintf("%s needs %d", dest, tc.needs), func(t *testing.T) {
			g := NewWithT(t)
			dir := t.TempDir()
			path := filepath.Join(dir, "tmp-1.pack")
			w, err := os.Create(path)
			g.Expect(err).NotTo(HaveOccurred())
			e := &entry{path: path, needs: tc.needs, changed: make(chan struct{})}
			f, err := os.Open(path)
			g.Expect(err).NotTo(HaveOccurred())
			defer f.Close()

			var out *os.File
			var got func() []byte
			if dest == "pipe" {
				r, pw, err := os.Pipe()
				g.Expect(err).NotTo(HaveOccurred())
				defer r.Close()
				read := make(chan []byte)
				go func() { b, _ := io.ReadAll(r); read <- b }()
				out, got = pw, func() []byte { pw.Close(); return <-read }
			} else {
				out, err = os.Create(filepath.Join(dir, "out"))
				g.Expect(err).NotTo(HaveOccurred())
				got = func() []byte { b, _ := os.ReadFile(out.Name()); out.Close(); return b }
			}

			want := make([]byte, 3<<20+17)
			rand.Read(want)
			type result struct {
				n   int64
				err error
			}
			sent := make(chan result, 1)
			go func() {
				n, err := e.streamTo(context.Background(), f, out)
				sent <- result{n, err}
			}()
			stopWatching := e.watchGrowth(w)
			for rest := want; len(rest) > 0; {
				n := min(len(rest), 100_000)
				_, err := w.Write(rest[:n])
				g.Expect(err).NotTo(HaveOccurred())
				rest = rest[n:]
			}
			stopWatching()
			g.Expect(w.Close()).To(Succeed())
			e.finish(nil)
			g.Expect(<-sent).To(Equal(result{int64(len(want)), nil}))
			g.Expect(bytes.Equal(got(), want)).To(BeTrue())
			g.Expect(e.view).To(BeNil(), "unmapped after the last request")
		})
	}
}

// Requests sending an entry at the same time share one mapping of its
// file, as long as the entry is expected to grow; the last one unmaps it.
func TestSharedView(t *testing.T) {
	g := NewWithT(t)
	path := filepath.Join(t.TempDir(), "tmp-1.pack")
	g.Expect(os.WriteFile(path, []byte("PACK"), 0o600)).To(Succeed())
	e := &entry{path: path, size: 4, needs: 3 << 20, changed: make(chan struct{})}
	open := func() *os.File {
		f, err := os.Open(path)
		g.Expect(err).NotTo(HaveOccurred())
		t.Cleanup(func() { f.Close() })
		return f
	}
	first, releaseFirst, err := e.sharedView(open())
	g.Expect(err).NotTo(HaveOccurred())
	second, releaseSecond, err := e.sharedView(open())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(first).To(HaveLen(3 << 20))
	g.Expect(&second[0]).To(BeIdenticalTo(&first[0]))
	g.Expect(string(second[:4])).To(Equal("PACK"))
	releaseFirst()
	g.Expect(e.view).NotTo(BeNil(), "still sent by the second request")
	releaseSecond()
	g.Expect(e.view).To(BeNil())

	// Finished, an entry is mapped as long as it is.
	e.done = true
	view, release, err := e.sharedView(open())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(view).To(HaveLen(4))
	release()

	// A file that cannot be mapped (a pipe) is an error: its request sends
	// chunk by chunk, or reads.
	r, pw, err := os.Pipe()
	g.Expect(err).NotTo(HaveOccurred())
	defer r.Close()
	defer pw.Close()
	_, _, err = (&entry{size: 4, done: true}).sharedView(r)
	g.Expect(err).To(HaveOccurred())
}

// Where the file cannot be mapped, the sender reads it.
func TestSenderReadsWhatItCannotMap(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	want := make([]byte, 3<<20+17)
	rand.Read(want)
	path := filepath.Join(dir, "1.pack")
	g.Expect(os.WriteFile(path, want, 0o600)).To(Succeed())
	f, err := os.Open(path)
	g.Expect(err).NotTo(HaveOccurred())
	defer f.Close()

	var got bytes.Buffer
	s := sender{w: &got, f: f, noMmap: true}
	for off := int64(0); off < int64(len(want)); {
		n, err := s.send(off, int64(len(want))-off)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(n).To(BeNumerically(">", 0))
		off += n
	}
	g.Expect(bytes.Equal(got.Bytes(), want)).To(BeTrue())
}

// A new entry gets room on the cache's volume by evicting finished entries,
// least recently used first, counting what entries being written may still
// write; where none is left to evict, there is no room.
func TestRoomEvictsForANewEntry(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		t.Skipf("a 4 MiB tmpfs needs root: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	c, err := New(Config{Dir: dir, Command: func(context.Context, string, []string) *exec.Cmd { return nil }})
	g.Expect(err).NotTo(HaveOccurred())
	defer c.Close()

	now := time.Now()
	add := func(key string, size, needs int64, done bool, used time.Time) *entry {
		path := filepath.Join(dir, key+".pack")
		g.Expect(os.WriteFile(path, make([]byte, size), 0o600)).To(Succeed())
		e := &entry{key: key, created: now, lastUsed: used, path: path, size: size, needs: needs, done: done, changed: make(chan struct{})}
		c.entries[key] = e
		return e
	}
	const mib = 1 << 20
	older := add("older", mib, mib, true, now.Add(-time.Minute))
	newer := add("newer", mib, mib, true, now)
	writing := add("writing", mib/2, 3*mib/2, false, now) // may write 1 MiB more

	c.mu.Lock()
	defer c.mu.Unlock()
	// 4 MiB - 2.5 MiB written - 1 MiB still to write: 0.5 MiB free.
	g.Expect(c.roomLocked(mib/4, now)).To(Succeed())
	g.Expect(c.entries).To(HaveKey("older"), "nothing evicted while there is room")
	g.Expect(c.roomLocked(mib, now)).To(Succeed())
	g.Expect(c.entries).NotTo(HaveKey("older"), "the least recently used made room")
	g.Expect(older.path).NotTo(BeAnExistingFile())
	g.Expect(c.entries).To(HaveKey("newer"))
	g.Expect(c.roomLocked(3*mib, now)).To(MatchError(errNoRoom))
	g.Expect(c.entries).NotTo(HaveKey("newer"), "evicted, and still no room")
	g.Expect(newer.path).NotTo(BeAnExistingFile())
	g.Expect(c.entries).To(HaveKey("writing"), "an entry being written stays")
	g.Expect(writing.path).To(BeAnExistingFile())
}

// A mapped entry that cannot be read fails its request, not the server: here
// the file is cut short while it is mapped, so reading it faults.
func TestSendMappedSurvivesAFault(t *testing.T) {
	g := NewWithT(t)
	path := filepath.Join(t.TempDir(), "1.pack")
	g.Expect(os.WriteFile(path, make([]byte, 1<<20), 0o600)).To(Succeed())
	f, err := os.Open(path)
	g.Expect(err).NotTo(HaveOccurred())
	defer f.Close()

	s := sender{w: truncatingWriter{path}, f: f}
	n, err := s.sendMapped(0, 1<<20)
	g.Expect(err).To(MatchError(ContainSubstring("reading the cached entry " + path + " failed")))
	g.Expect(n).To(BeZero())
	n, err = s.sendMapped(0, 1<<20)
	g.Expect(err).To(HaveOccurred(), "still cut short")
	g.Expect(n).To(BeZero())
}

// truncatingWriter empties the file at path, then reads what it was given.
type truncatingWriter struct{ path string }

func (w truncatingWriter) Write(p []byte) (int, error) {
	if err := os.Truncate(w.path, 0); err != nil {
		return 0, err
	}
	for _, b := range p {
		readSink += b
	}
	return len(p), nil
}

// readSink keeps the compiler from leaving out truncatingWriter's reads.
var readSink byte
