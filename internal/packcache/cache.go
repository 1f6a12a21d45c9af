// Package packcache runs git pack-objects once for identical fetches and
// streams its output to every client that asked, as GitLab's Gitaly does for
// CI fan-out (50 jobs cloning one commit at once).
//
// git upload-pack runs uploadpack.packObjectsHook instead of pack-objects,
// as "HOOK git pack-objects ARGS" with the wants and haves on stdin. The hook
// (internal/packhook: cmd/gitssh-pack-hook, or gitssh's own binary) hands its stdin,
// stdout and stderr to the gitssh process over a Unix socket in the cache
// directory, so that one process sees every request and can share work
// between them. The key is a hash of the repository, the arguments and
// stdin: everything pack-objects' output depends on. A request that differs
// in anything (other wants or haves, shallow, a filter, progress or not)
// has another key and simply misses.
//
// The first request for a key runs pack-objects into a file in the cache
// directory; it and every request for the same key that comes while it runs
// read that file as it grows, and later ones read it finished. A file gets
// its final name only once pack-objects has succeeded: a pack that failed or
// was cut short is never served again. Finished entries live for Config.TTL
// and the oldest go first when they hold more than Config.MaxBytes.
package packcache

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/gitssh-dev/gitssh/internal/packhook"
)

// Config configures a Cache.
type Config struct {
	// Dir holds the cached packs and the hook's socket; a directory of its
	// own (an emptyDir): files found there at start are removed.
	Dir string
	// MaxBytes bounds what finished entries hold on disk; the least recently
	// used go first. Packs being written count once they are finished, and a
	// file stays on disk while a client still reads it. Default 1 GiB.
	MaxBytes int64
	// TTL is how long a finished entry is served. Default 5m.
	TTL time.Duration
	// HookBinary is the executable git runs as uploadpack.packObjectsHook;
	// it must call packhook.Run when packhook.Is. Default: HookName beside
	// this process's executable, if it is there, else the executable itself.
	HookBinary string
	// GitBinary is what the hook runs when the cache cannot serve it.
	GitBinary string
	// Command returns "git ARGS" (ARGS as git upload-pack gives them) for the
	// repository dir, ended when ctx is; the cache sets its stdio.
	Command func(ctx context.Context, dir string, args []string) *exec.Cmd
	// UploadPack returns "git ARGS upload-pack --stateless-rpc DIR" for the
	// repository dir, speaking protocol v2, with env added to its
	// environment, ended when ctx is: it answers one request read from stdin,
	// for Response. nil: Response serves nothing.
	UploadPack func(ctx context.Context, dir string, args, env []string) *exec.Cmd
	// Turn, when set, is called before pack-objects runs for the repository
	// dir (a miss or a bypass; a hit runs none) and waits for a turn to run
	// it, telling the client on stderr if it has to wait. It returns the func
	// that ends the turn, or an error every client of that run is shown.
	Turn func(ctx context.Context, dir string, stderr io.Writer) (done func(), err error)
	// Registerer takes the cache's metrics; nil: none are registered.
	Registerer prometheus.Registerer
	Log        logr.Logger
}

// Defaults.
const (
	DefaultMaxBytes int64 = 1 << 30
	DefaultTTL            = 5 * time.Minute
)

// maxStdin bounds the request read into memory: about 1.6 million object
// ids. A larger one runs pack-objects uncached.
const maxStdin = 64 << 20

const socketName = "hook.sock"

// HookName is cmd/gitssh-pack-hook's executable, installed beside gitssh's.
const HookName = "gitssh-pack-hook"

// Cache is a running pack cache. Create it with New, then Serve it.
type Cache struct {
	cfg  Config
	m    *metrics
	ln   *net.UnixListener
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu      sync.Mutex
	tokens  map[string]string // token -> repository directory
	entries map[string]*entry // key -> entry
	bytes   int64             // held by finished entries
	// lastNoRoom is when the log last said the volume was too full.
	lastNoRoom time.Time
}

// entry is one pack: in flight while pack-objects writes it, then finished.
type entry struct {
	key     string
	created time.Time
	// Under Cache.mu:
	lastUsed time.Time
	readers  int                // requests reading it
	cancel   context.CancelFunc // stops pack-objects
	// needs is what the entry was estimated to take on disk (see room);
	// while it is written, the part not yet written stays set aside.
	needs int64

	mu      sync.Mutex
	path    string // tmp-*.pack while written, KEY.pack once finished
	size    int64
	done    bool
	err     error
	changed chan struct{} // closed and replaced when size or done change
	// view is the entry's file mapped for all the requests sending it at
	// once (see sharedView); viewUsers counts them.
	view      []byte
	viewUsers int
}

// New checks cfg, empties the cache directory and listens on its socket.
func New(cfg Config) (*Cache, error) {
	cfg.MaxBytes = cmp(cfg.MaxBytes, DefaultMaxBytes)
	cfg.TTL = cmp(cfg.TTL, DefaultTTL)
	if cfg.HookBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("pack cache: cannot find this program for git's pack-objects hook: %w", err)
		}
		cfg.HookBinary = hookBeside(exe)
	}
	switch {
	case !filepath.IsAbs(cfg.Dir):
		return nil, fmt.Errorf("pack cache directory must be an absolute path, not %q", cfg.Dir)
	case !filepath.IsAbs(cfg.HookBinary) || strings.ContainsAny(cfg.HookBinary, "|&;<>()$`\\\"' \t\n*?[#~=%"):
		// git hands a hook with any of these to sh -c; gitssh runs no shell.
		return nil, fmt.Errorf("pack cache: the hook %q must be an absolute path without spaces or shell characters", cfg.HookBinary)
	case cfg.MaxBytes < 0 || cfg.TTL < 0:
		return nil, errors.New("pack cache size and TTL must not be negative")
	case cfg.Command == nil:
		return nil, errors.New("pack cache: Config.Command is needed")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("pack cache: %w", err)
	}
	// An emptyDir is made 0777: keep other users out of the packs. Under an
	// fsGroup the directory is root's and this fails; the socket still
	// serves only requests with a token gitssh handed out.
	os.Chmod(cfg.Dir, 0o700)
	// Entries of a previous process: nothing says they were complete.
	for _, pattern := range []string{"*.pack", socketName} {
		old, _ := filepath.Glob(filepath.Join(cfg.Dir, pattern))
		for _, f := range old {
			os.Remove(f)
		}
	}
	sock := filepath.Join(cfg.Dir, socketName)
	if len(sock) > 100 { // sun_path holds 108 bytes
		return nil, fmt.Errorf("pack cache directory %q is too long for a Unix socket path; choose a shorter one", cfg.Dir)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("pack cache: %w", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	m := newMetrics(cfg.Registerer)
	m.maxBytes.Set(float64(cfg.MaxBytes))
	return &Cache{
		cfg: cfg, m: m, ln: ln, ctx: ctx, stop: stop,
		tokens: map[string]string{}, entries: map[string]*entry{},
	}, nil
}

// hookBeside is HookName in exe's directory if it is there, else exe (which
// runs the hook too): the hook starts once per fetch, in a fifth of gitssh's
// time.
func hookBeside(exe string) string {
	hook := filepath.Join(filepath.Dir(exe), HookName)
	if fi, err := os.Stat(hook); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return hook
	}
	return exe
}

func cmp[T int64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Serve answers hooks until Close.
func (c *Cache) Serve() {
	c.wg.Go(func() {
		t := time.NewTicker(max(c.cfg.TTL/2, time.Second))
		defer t.Stop()
		for {
			select {
			case <-c.ctx.Done():
				return
			case <-t.C:
				c.mu.Lock()
				c.evictLocked(time.Now())
				c.mu.Unlock()
			}
		}
	})
	for {
		conn, err := c.ln.AcceptUnix()
		if err != nil {
			return
		}
		c.wg.Go(func() { c.handle(conn) })
	}
}

// Close stops pack-objects runs and waits for the requests in progress.
func (c *Cache) Close() {
	c.stop()
	c.ln.Close()
	c.wg.Wait()
}

// GitConfig is the "-c" setting that makes git upload-pack run the hook.
func (c *Cache) GitConfig() []string {
	return []string{"-c", "uploadpack.packObjectsHook=" + c.cfg.HookBinary}
}

// Env registers one upload-pack of the repository dir and returns the
// environment its hook needs, and a func to call when upload-pack is done.
// The hook names the repository only by its token: a key always carries the
// directory the server authorized.
func (c *Cache) Env(dir string) (env []string, done func()) {
	token := rand.Text()
	c.mu.Lock()
	c.tokens[token] = dir
	c.mu.Unlock()
	git := c.cfg.GitBinary
	if git == "" {
		git = "git"
	}
	return []string{packhook.EnvSocket + "=" + c.ln.Addr().String(), packhook.EnvToken + "=" + token, packhook.EnvGit + "=" + git}, func() {
		c.mu.Lock()
		delete(c.tokens, token)
		c.mu.Unlock()
	}
}

func (c *Cache) handle(conn *net.UnixConn) {
	defer conn.Close()
	buf := make([]byte, 128<<10)
	oob := make([]byte, syscall.CmsgSpace(3*4))
	// The hook sends its request at once; a silent peer must not hold Close.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	files := receivedFiles(oob[:oobn])
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if err != nil {
		return
	}
	conn.SetReadDeadline(time.Time{})
	var req packhook.Request
	dir, ok := "", false
	if len(files) == 3 && json.Unmarshal(buf[:n], &req) == nil {
		c.mu.Lock()
		dir, ok = c.tokens[req.Token]
		c.mu.Unlock()
	}
	if !ok {
		json.NewEncoder(conn).Encode(packhook.Reply{Fallback: true})
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	go func() {
		// The hook never writes again: a read returns when it is gone
		// (upload-pack killed, client gone), or when conn is closed.
		conn.Read(make([]byte, 1))
		cancel()
	}()
	status := c.serve(ctx, dir, req.Args, files[0], files[1], files[2])
	json.NewEncoder(conn).Encode(packhook.Reply{Exit: status})
}

func receivedFiles(oob []byte) []*os.File {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := syscall.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			syscall.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "hook"))
		}
	}
	return files
}

// cacheable accepts the arguments git upload-pack gives pack-objects (git
// 2.39 to 2.47): "[--shallow-file ""] pack-objects OPTIONS", where
// --shallow-file "" (a shallow fetch) tells git to ignore the repository's
// own shallow file and take "--shallow ID" lines from stdin. Anything else,
// such as --uri-protocol, runs uncached.
func cacheable(args []string) bool {
	if len(args) >= 2 && args[0] == "--shallow-file" && args[1] == "" {
		args = args[2:]
	}
	if len(args) == 0 || args[0] != "pack-objects" {
		return false
	}
	for _, a := range args[1:] {
		switch {
		case a == "--revs", a == "--thin", a == "--stdout", a == "--progress", a == "--delta-base-offset", a == "--include-tag", a == "--shallow":
		case strings.HasPrefix(a, "--filter="):
		default:
			return false
		}
	}
	return slices.Contains(args, "--stdout")
}

// key names a pack by everything that decides it.
func key(dir string, args []string, stdin []byte) string {
	h := sha256.New()
	for _, s := range append([]string{dir}, args...) {
		fmt.Fprintf(h, "%d:%s\x00", len(s), s)
	}
	h.Write(stdin)
	return hex.EncodeToString(h.Sum(nil))
}

var errPackObjectsFailed = errors.New("pack-objects failed")

// serve answers one request and returns pack-objects' exit status.
func (c *Cache) serve(ctx context.Context, dir string, args []string, stdin io.Reader, stdout, stderr *os.File) int {
	if !cacheable(args) {
		c.m.requests.WithLabelValues(resultBypass).Inc()
		return c.runUncached(ctx, dir, args, stdin, stdout, stderr)
	}
	in, err := io.ReadAll(io.LimitReader(stdin, maxStdin+1))
	if err != nil {
		return 128
	}
	if len(in) > maxStdin {
		c.m.requests.WithLabelValues(resultBypass).Inc()
		return c.runUncached(ctx, dir, args, io.MultiReader(bytes.NewReader(in), stdin), stdout, stderr)
	}
	packObjects := producer{
		command:  func(ctx context.Context) (*exec.Cmd, func()) { return c.cfg.Command(ctx, dir, args), func() {} },
		waitTurn: true,
	}
	sent, err := c.share(ctx, c.m.requests, key(dir, args, in), dir, packObjects, in, stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errNoEntry):
		if !errors.Is(err, errNoRoom) { // logged once a minute
			c.cfg.Log.Error(err, "Failed to create a pack cache entry, running pack-objects uncached")
		}
		c.m.requests.WithLabelValues(resultBypass).Inc()
		return c.runUncached(ctx, dir, args, bytes.NewReader(in), stdout, stderr)
	case errors.Is(err, errPackObjectsFailed) && sent == 0:
		// Nothing reached this client yet: let it have its own run, which
		// also shows it git's own error if the request was at fault.
		c.m.requests.WithLabelValues(resultBypass).Inc()
		return c.runUncached(ctx, dir, args, bytes.NewReader(in), stdout, stderr)
	default:
		c.reportFailure(ctx, err, sent, stderr, "a pack")
		return 128
	}
}

// reportFailure says why a request could not be served from its entry, unless
// its client is gone: to the client when the run it waited for never got a
// turn (every client of that run learns why), else to the log.
func (c *Cache) reportFailure(ctx context.Context, err error, sent int64, stderr io.Writer, what string) {
	switch {
	case ctx.Err() != nil:
	case errors.As(err, new(*noTurnError)):
		fmt.Fprintf(stderr, "gitssh: %v\n", err)
	default:
		c.cfg.Log.Error(err, "Failed to serve "+what+" from the cache", "bytesSent", sent)
	}
}

// errNoEntry wraps share's failure to create an entry: a disk error, or no
// room on the cache's volume (errNoRoom).
var errNoEntry = errors.New("no cache entry")

// errNoRoom: the cache's volume cannot take the entry a miss would write.
var errNoRoom = errors.New("the pack cache's volume is too full for this entry")

// producer is what fills an entry.
type producer struct {
	// command runs with the entry's file as stdout; done is called after.
	command func(ctx context.Context) (cmd *exec.Cmd, done func())
	// waitTurn: command runs pack-objects itself, so waits for a turn first.
	waitTurn bool
}

// share streams the entry for k to w. When there is none yet it creates it
// and runs p into it, with stdin; requests counts the result.
func (c *Cache) share(ctx context.Context, requests *prometheus.CounterVec, k, dir string, p producer, stdin []byte, w, stderr io.Writer) (int64, error) {
	e, f, created, err := c.attach(k, dir)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errNoEntry, err)
	}
	result := resultHit
	if created {
		result = resultMiss
		pctx, cancel := context.WithCancel(c.ctx)
		c.mu.Lock()
		e.cancel = cancel
		c.mu.Unlock()
		c.wg.Go(func() { c.produce(pctx, e, dir, p, stdin, stderr) })
	}
	requests.WithLabelValues(result).Inc()
	sent, err := e.streamTo(ctx, f, w)
	f.Close()
	c.detach(e)
	c.m.servedBytes.WithLabelValues(result).Add(float64(sent))
	return sent, err
}

// attach finds the entry for k or creates it, for the repository dir, and
// opens its file for reading.
func (c *Cache) attach(k, dir string) (e *entry, f *os.File, created bool, err error) {
	// A miss's estimate walks the repository's objects: not under c.mu,
	// which every request takes.
	c.mu.Lock()
	_, exists := c.entries[k]
	c.mu.Unlock()
	needs := int64(-1)
	if !exists {
		needs = entryEstimate(dir)
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.evictLocked(now)
	if e = c.entries[k]; e != nil {
		e.mu.Lock()
		f, err = os.Open(e.path)
		e.mu.Unlock()
		if err == nil {
			e.readers++
			e.lastUsed = now
			return e, f, false, nil
		}
		c.dropLocked(e, "")
	}
	if needs < 0 { // it was there a moment ago
		needs = entryEstimate(dir)
	}
	if err := c.roomLocked(needs, now); err != nil {
		return nil, nil, false, err
	}
	w, err := os.CreateTemp(c.cfg.Dir, "tmp-*.pack")
	if err != nil {
		return nil, nil, false, err
	}
	w.Close() // produce opens it again; readers need a name
	if f, err = os.Open(w.Name()); err != nil {
		os.Remove(w.Name())
		return nil, nil, false, err
	}
	e = &entry{key: k, created: now, lastUsed: now, readers: 1, needs: needs, path: w.Name(), changed: make(chan struct{})}
	c.entries[k] = e
	c.m.entries.Set(float64(len(c.entries)))
	return e, f, true, nil
}

// detach ends a request's reading; pack-objects stops when nobody waits for it.
func (c *Cache) detach(e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.readers--
	if e.readers == 0 && !e.finished() && e.cancel != nil {
		e.cancel()
	}
}

// produce runs pack-objects (or, for Response, upload-pack) into e's file,
// then names the file for good or removes it.
func (c *Cache) produce(ctx context.Context, e *entry, dir string, p producer, stdin []byte, stderr io.Writer) {
	endTurn, err := func() {}, error(nil)
	if p.waitTurn {
		endTurn, err = c.turn(ctx, dir, ignoreErrors{stderr})
	}
	if err != nil {
		c.mu.Lock()
		e.finish(err)
		c.dropLocked(e, "")
		c.mu.Unlock()
		return
	}
	start := time.Now()
	f, err := os.OpenFile(e.path, os.O_WRONLY, 0)
	if err == nil {
		cmd, done := p.command(ctx)
		defer done()
		cmd.Stdin = bytes.NewReader(stdin)
		// git writes the entry's file itself: a pipe to this process and a
		// copy into the file cost gitssh a third of a miss's CPU, and woke
		// every reader for each of git's 8 KiB writes.
		cmd.Stdout = f
		// The first client's progress messages; another writer than an
		// *os.File, so that the client going away cannot stop the run.
		cmd.Stderr = ignoreErrors{stderr}
		if err = cmd.Start(); err == nil {
			stopWatching := e.watchGrowth(f)
			err = cmd.Wait()
			stopWatching()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = ctx.Err()
		}
	}
	endTurn()
	e.mu.Lock()
	size := e.size
	e.mu.Unlock()
	c.m.generatedBytes.Add(float64(size))
	c.m.runDuration.Observe(time.Since(start).Seconds())

	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		final := filepath.Join(c.cfg.Dir, e.key+".pack")
		e.mu.Lock()
		if err = os.Rename(e.path, final); err == nil {
			e.path = final
		}
		e.mu.Unlock()
	}
	if err != nil {
		if ctx.Err() == nil {
			c.cfg.Log.Info("Failed to write a pack into the cache", "error", err.Error(), "repository", dir)
		}
		e.finish(fmt.Errorf("%w: %v", errPackObjectsFailed, err))
		c.dropLocked(e, "")
		return
	}
	e.finish(nil)
	c.bytes += size
	c.m.bytes.Set(float64(c.bytes))
	c.evictLocked(time.Now())
}

// entryEstimate is what an entry for the repository dir may take on disk:
// about the repository's objects, packed and loose (a clone's pack, or a
// fetch's answer, holds at most all of them, compressed as they are on disk),
// and a MiB for the rest. A smaller fetch takes less: the estimate errs on the
// side of not filling the volume.
func entryEstimate(dir string) int64 {
	var size int64 = 1 << 20
	filepath.WalkDir(filepath.Join(dir, "objects"), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				size += fi.Size()
			}
		}
		return nil
	})
	return size
}

// roomLocked makes sure the cache's volume can take an entry of needs bytes
// besides what the entries being written may still write, evicting finished
// entries, least recently used first, while it cannot. A miss that fills the
// volume fails every client reading its entry, so without room the request
// is served without the cache (errNoRoom) instead.
func (c *Cache) roomLocked(needs int64, now time.Time) error {
	for {
		var st unix.Statfs_t
		if err := unix.Statfs(c.cfg.Dir, &st); err != nil {
			return nil // cannot tell: write, as without this check
		}
		free := int64(st.Bavail) * st.Bsize
		var finished []*entry
		for _, e := range c.entries {
			e.mu.Lock()
			if e.done {
				finished = append(finished, e)
			} else {
				free -= max(0, e.needs-e.size)
			}
			e.mu.Unlock()
		}
		if free >= needs {
			return nil
		}
		if len(finished) == 0 {
			if now.Sub(c.lastNoRoom) >= time.Minute {
				c.lastNoRoom = now
				c.cfg.Log.Info("The pack cache's volume is too full; serving fetches without the cache until it has room",
					"directory", c.cfg.Dir, "freeBytes", free, "neededBytes", needs)
			}
			return errNoRoom
		}
		// Readers keep a dropped entry's file open: its space comes back when they are done.
		c.dropLocked(slices.MinFunc(finished, func(a, b *entry) int { return a.lastUsed.Compare(b.lastUsed) }), "space")
	}
}

// evictLocked drops finished entries past their TTL, then the least recently
// used until the rest fit in MaxBytes. Readers keep their open files.
func (c *Cache) evictLocked(now time.Time) {
	var finished []*entry
	for _, e := range c.entries {
		if !e.finished() {
			continue
		}
		if now.Sub(e.created) >= c.cfg.TTL {
			c.dropLocked(e, "ttl")
			continue
		}
		finished = append(finished, e)
	}
	slices.SortFunc(finished, func(a, b *entry) int { return a.lastUsed.Compare(b.lastUsed) })
	for _, e := range finished {
		if c.bytes <= c.cfg.MaxBytes {
			break
		}
		c.dropLocked(e, "size")
	}
}

// dropLocked removes e from the cache and its file from the disk.
func (c *Cache) dropLocked(e *entry, reason string) {
	if c.entries[e.key] == e {
		delete(c.entries, e.key)
	}
	e.mu.Lock()
	path, size, ok := e.path, e.size, e.done && e.err == nil
	e.mu.Unlock()
	os.Remove(path)
	if ok {
		c.bytes -= size
		c.m.bytes.Set(float64(c.bytes))
	}
	if reason != "" {
		c.m.evictions.WithLabelValues(reason).Inc()
	}
	c.m.entries.Set(float64(len(c.entries)))
}

func (e *entry) finished() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.done
}

func (e *entry) finish(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.done, e.err = true, err
	close(e.changed)
	e.changed = make(chan struct{})
}

// streamTo copies e's pack from f to w as pack-objects writes it.
func (e *entry) streamTo(ctx context.Context, f *os.File, w io.Writer) (int64, error) {
	var off int64
	s := sender{w: w, f: f, e: e}
	defer s.close()
	for {
		e.mu.Lock()
		size, done, err, changed := e.size, e.done, e.err, e.changed
		e.mu.Unlock()
		if off < size {
			n, err := s.send(off, size-off)
			off += n
			if err != nil {
				return off, err
			}
			continue
		}
		if done {
			return off, err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return off, ctx.Err()
		}
	}
}

// sender writes ranges of a cached entry to its reader: a hook's stdout,
// upload-pack's pipe, or a client's SSH channel. splice(2) moves the file's
// pages into a pipe: no copy of each byte into this process and out again,
// which was most of what a cache hit cost gitssh itself. Any other writer
// gets the file mapped (see sendMapped), or read where it cannot be.
type sender struct {
	w      io.Writer
	f      *os.File
	e      *entry // for its shared view; nil: a mapping per chunk
	noPipe bool
	noMmap bool
	buf    []byte

	view        []byte // e's shared view, once asked for
	releaseView func()
}

// close gives back the entry's shared view.
func (s *sender) close() {
	if s.releaseView != nil {
		s.releaseView()
		s.view, s.releaseView = nil, nil
	}
}

// sharedView maps the entry's file (f) once for every request sending it at
// the same time, as long as it is expected to grow (needs) or is. Each
// request mapping its own 2 MiB chunks with MAP_POPULATE filled the page
// tables again for every request and unmapped them after, 5–6% of gitssh's
// CPU in a fan-out of 30 clones; in one mapping, the first request to touch a
// page maps it for all, without a populate, and nothing is unmapped until
// the last request is done (release). Pages past the end of the file are
// never read: a request sends only what fstat has seen written. A file
// mapped beyond its end takes address space, not memory. Returns no view
// while there is nothing to map yet, and an error when the file cannot be
// mapped.
func (e *entry) sharedView(f *os.File) (view []byte, release func(), err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.view == nil {
		length := e.size
		if !e.done {
			length = max(length, e.needs)
		}
		if length <= 0 {
			return nil, nil, nil
		}
		m, err := unix.Mmap(int(f.Fd()), 0, int(length), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return nil, nil, err
		}
		e.view = m
	}
	e.viewUsers++
	return e.view, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.viewUsers--; e.viewUsers == 0 {
			unix.Munmap(e.view)
			e.view = nil
		}
	}, nil
}

// mapChunk is how much of an entry sendMapped maps at a time.
const mapChunk = 2 << 20

// errCannotMap: the file cannot be mapped (its filesystem does not allow
// it); the sender reads it instead.
var errCannotMap = errors.New("cannot map the cached entry")

// sendMapped writes up to mapChunk bytes from off, mapped from the file
// rather than read into a buffer: the writer (x/crypto's channel) copies
// them into its packets anyway, so a read would be one more copy of every
// byte. An entry's file is only ever appended to and renamed or removed,
// never truncated, so the mapped range, all written, stays valid.
func (s *sender) sendMapped(off, n int64) (written int64, err error) {
	n = min(n, mapChunk)
	if s.view == nil && s.e != nil {
		var err error
		if s.view, s.releaseView, err = s.e.sharedView(s.f); err != nil {
			s.e = nil // not mappable whole: chunk by chunk, or read
		}
	}
	var chunk []byte
	if off < int64(len(s.view)) {
		chunk = s.view[off:min(off+n, int64(len(s.view)))]
	} else {
		// Past what the entry was expected to take, or without a view.
		start := off &^ int64(os.Getpagesize()-1)
		m, err := unix.Mmap(int(s.f.Fd()), start, int(off-start+n), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return 0, fmt.Errorf("%w: %w", errCannotMap, err)
		}
		defer unix.Munmap(m)
		chunk = m[off-start:]
	}
	// A page that cannot be read (a disk error, or a file cut short by
	// someone else) faults where a read would have returned an error: a
	// panic that this request recovers from, not a crash of the server.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			written, err = 0, fmt.Errorf("reading the cached entry %s failed: %v", s.f.Name(), r)
		}
	}()
	w, err := s.w.Write(chunk)
	return int64(w), err
}

func (s *sender) send(off, n int64) (int64, error) {
	if pipe, ok := s.w.(*os.File); ok && !s.noPipe {
		done, err := s.splice(pipe, off, n)
		if !errors.Is(err, unix.EINVAL) || done > 0 {
			return done, err
		}
		s.noPipe = true
	}
	if !s.noMmap {
		done, err := s.sendMapped(off, n)
		if !errors.Is(err, errCannotMap) {
			return done, err
		}
		s.noMmap = true
	}
	if s.buf == nil {
		s.buf = make([]byte, 256<<10)
	}
	m, err := s.f.ReadAt(s.buf[:min(int64(len(s.buf)), n)], off)
	if m > 0 {
		if _, werr := s.w.Write(s.buf[:m]); werr != nil {
			return 0, werr
		}
	}
	if err == io.EOF && m > 0 {
		err = nil
	}
	return int64(m), err
}

func (s *sender) splice(pipe *os.File, off, n int64) (int64, error) {
	start, end := off, off+n
	for off < end {
		// off advances by what was moved; the pipe takes up to its capacity at a time.
		m, err := unix.Splice(int(s.f.Fd()), &off, int(pipe.Fd()), nil, int(min(end-off, 1<<30)), 0)
		switch {
		case err == unix.EINTR:
		case err != nil:
			return off - start, err
		case m == 0:
			return off - start, io.ErrUnexpectedEOF
		}
	}
	return n, nil
}

// growthPoll is how often readers learn how far git has written an entry:
// often enough that a pipe to upload-pack or a client's window does not run
// dry between polls, rarely enough to cost nothing next to the writes.
const growthPoll = 2 * time.Millisecond

// watchGrowth tells e's readers how far f has grown, every growthPoll, until
// the func it returns is called; that makes a last poll, so the size is final.
func (e *entry) watchGrowth(f *os.File) (stop func()) {
	quit, stopped := make(chan struct{}), make(chan struct{})
	poll := func() {
		if fi, err := f.Stat(); err == nil {
			e.grow(fi.Size())
		}
	}
	go func() {
		defer close(stopped)
		t := time.NewTicker(growthPoll)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				poll()
			case <-quit:
				poll()
				return
			}
		}
	}()
	return func() { close(quit); <-stopped }
}

// grow records that e's file holds size bytes and wakes its readers.
func (e *entry) grow(size int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if size <= e.size {
		return
	}
	e.size = size
	close(e.changed)
	e.changed = make(chan struct{})
}

type ignoreErrors struct{ w io.Writer }

func (i ignoreErrors) Write(p []byte) (int, error) {
	i.w.Write(p)
	return len(p), nil
}

// runUncached runs pack-objects for this request alone.
func (c *Cache) runUncached(ctx context.Context, dir string, args []string, stdin io.Reader, stdout, stderr *os.File) int {
	endTurn, err := c.turn(ctx, dir, stderr)
	if err != nil {
		if ctx.Err() == nil {
			fmt.Fprintf(stderr, "gitssh: %v\n", err)
		}
		return 128
	}
	defer endTurn()
	cmd := c.cfg.Command(ctx, dir, args)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.ExitCode() > 0:
		return ee.ExitCode()
	default:
		return 128
	}
}

// noTurnError is Config.Turn's error: pack-objects did not run.
type noTurnError struct{ err error }

func (e *noTurnError) Error() string { return e.err.Error() }

// turn waits for Config.Turn, when set, and returns the func that ends the turn.
func (c *Cache) turn(ctx context.Context, dir string, stderr io.Writer) (done func(), err error) {
	if c.cfg.Turn == nil {
		return func() {}, nil
	}
	if done, err = c.cfg.Turn(ctx, dir, stderr); err != nil {
		return nil, &noTurnError{err}
	}
	return done, nil
}
