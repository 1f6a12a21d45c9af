package sshserver

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gitssh-dev/gitssh/internal/packcache"
)

// A protocol v2 clone is three exchanges with one upload-pack: its
// capabilities, ls-refs, and a fetch that ends in "done". The pack cache can
// answer such a fetch whole (packcache.Response) if it knows what the answer
// depends on beyond the request: the refs the client was shown. v2Fetches
// sits between the client and upload-pack for that: it reads the client's
// requests pkt-line by pkt-line and hands each to upload-pack, except a
// fetch the cache serves; and it tells upload-pack's answers apart to keep a
// hash of each. Anything else, or anything it does not follow, goes to
// upload-pack untouched, and from then on the session is a plain relay.
// (gitprotocol-v2(5), gitprotocol-common(5).)
type v2Fetches struct {
	ctx   context.Context
	cache *packcache.Cache
	dir   string
	out   io.Writer // to the client
	outN  *atomic.Int64
	errw  io.Writer // the client's stderr
	git   io.Writer // upload-pack's stdin

	// The response side: only the goroutine copying upload-pack's stdout.
	hdr    [4]byte
	hdrN   int
	skip   int
	digest hash.Hash

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced when answers, following or ended change
	answers   []string      // hashes of upload-pack's complete answers: capabilities, then one per ls-refs
	following bool          // every request so far was ls-refs: answers are told apart
	ended     bool          // upload-pack's stdout ended
	failed    bool          // a cached response broke off: the client has half of it
}

// Requests longer than this go to upload-pack as they come, uncached (a
// fetch with hundreds of thousands of haves).
const maxV2Request = 1 << 20

// pktMax is the longest pkt-line, its 4 length digits included.
const pktMax = 65520

func speaksV2(gitProtocol string) bool {
	return slices.Contains(strings.Split(gitProtocol, ":"), "version=2")
}

func newV2Fetches(ctx context.Context, cache *packcache.Cache, dir string, client io.Writer, clientErr io.Writer, outN *atomic.Int64, git io.Writer) *v2Fetches {
	return &v2Fetches{
		ctx: ctx, cache: cache, dir: dir, out: client, outN: outN, errw: clientErr, git: git,
		digest:  sha256.New(),
		changed: make(chan struct{}),
		// upload-pack's first answer is its capabilities, unasked.
		following: true,
	}
}

// Write passes upload-pack's output to the client, noting where each
// answer ends (its flush-pkt) while it follows the session.
func (v *v2Fetches) Write(p []byte) (int, error) {
	v.mu.Lock()
	following := v.following
	v.mu.Unlock()
	var done []string
	ok := true
	if following {
		done, ok = v.scan(p)
	}
	n, err := v.out.Write(p)
	if len(done) > 0 || !ok {
		v.update(func() {
			v.answers = append(v.answers, done...)
			v.following = v.following && ok
		})
	}
	return n, err
}

// scan hashes p into the answer in progress and returns the hashes of the
// answers it completes; false if p is not pkt-lines.
func (v *v2Fetches) scan(p []byte) (done []string, ok bool) {
	for len(p) > 0 {
		if v.skip > 0 {
			n := min(v.skip, len(p))
			v.digest.Write(p[:n])
			v.skip -= n
			p = p[n:]
			continue
		}
		n := copy(v.hdr[v.hdrN:], p)
		v.digest.Write(p[:n])
		v.hdrN += n
		p = p[n:]
		if v.hdrN < 4 {
			break
		}
		v.hdrN = 0
		size, ok := pktHeader(v.hdr[:])
		switch {
		case !ok:
			return done, false
		case size == 0: // flush-pkt: the answer is complete
			done = append(done, hex.EncodeToString(v.digest.Sum(nil)))
			v.digest.Reset()
		case size >= 4:
			v.skip = int(size) - 4
		}
	}
	return done, true
}

// closeAnswers notes that upload-pack's stdout ended.
func (v *v2Fetches) closeAnswers() { v.update(func() { v.ended = true }) }

func (v *v2Fetches) update(f func()) {
	v.mu.Lock()
	defer v.mu.Unlock()
	f()
	close(v.changed)
	v.changed = make(chan struct{})
}

// stopFollowing makes the rest of the session a plain relay.
func (v *v2Fetches) stopFollowing() { v.update(func() { v.following = false }) }

// answersUpTo waits until upload-pack has answered n times and the client
// has been sent all of it, and returns the answers' hashes; false if it
// will not (it exited, or the session is no longer followed).
func (v *v2Fetches) answersUpTo(n int) ([]string, bool) {
	for {
		v.mu.Lock()
		answers, stop, changed := v.answers, v.ended || !v.following, v.changed
		v.mu.Unlock()
		if len(answers) >= n {
			return answers, true
		}
		if stop {
			return nil, false
		}
		select {
		case <-changed:
		case <-v.ctx.Done():
			return nil, false
		}
	}
}

// brokeOff says a cached response was cut short: the session fails.
func (v *v2Fetches) brokeOff() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.failed
}

// relay reads the client's requests until EOF and hands them on, counting
// the bytes read into inN.
func (v *v2Fetches) relay(client io.Reader, inN *atomic.Int64) {
	r := bufio.NewReaderSize(countingReader{client, inN}, 64<<10)
	var buf []byte // the request so far
	var lsRefs request
	lsRefsAnswered := 0
	// plain hands upload-pack what is read and the rest of the session as it comes.
	plain := func() {
		v.stopFollowing()
		if _, err := v.git.Write(buf); err == nil {
			io.Copy(v.git, r)
		}
		io.Copy(io.Discard, r) // upload-pack is gone: read to the client's EOF
	}
	for {
		pkt, err := readPkt(r)
		if err == nil && len(buf)+len(pkt) > maxV2Request {
			err = errTooLong
		}
		if err != nil {
			// EOF, or something upload-pack is to judge: the pkt-line is
			// still in r.
			plain()
			return
		}
		buf = append(buf, pkt...)
		if string(pkt) != "0000" {
			continue
		}
		req := parseRequest(buf)
		switch {
		case req.command == "ls-refs":
			if _, err := v.git.Write(buf); err != nil {
				io.Copy(io.Discard, r)
				return
			}
			lsRefs = req
			lsRefsAnswered++
			buf = buf[:0]
		case req.command == "fetch" && lsRefsAnswered > 0 && req.cacheable(lsRefs) && v.serveCached(buf, lsRefs, lsRefsAnswered):
			buf = buf[:0]
			plain() // what follows, usually nothing
			return
		default:
			plain()
			return
		}
	}
}

// serveCached answers a fetch from the pack cache and says whether it did;
// if not, upload-pack is to answer it. The fetch depends on what the client
// was told before: upload-pack's capabilities and the refs ls-refs listed.
func (v *v2Fetches) serveCached(fetch []byte, lsRefs request, lsRefsAnswered int) bool {
	answers, ok := v.answersUpTo(1 + lsRefsAnswered)
	if !ok {
		return false
	}
	depends := []string{answers[0], string(lsRefs.raw), answers[lsRefsAnswered]}
	v.stopFollowing() // upload-pack answers nothing while the cache does
	sent, err := v.cache.Response(v.ctx, v.dir, depends, fetch, v.out, v.errw)
	v.outN.Add(sent)
	switch {
	case err == nil:
		return true
	case errors.Is(err, packcache.ErrNotServed):
		return false
	default:
		v.update(func() { v.failed = true })
		return true
	}
}

var errTooLong = errors.New("request too long to follow")

// pktHeader reads a pkt-line's four length digits: the line's length,
// header included, or 0, 1 or 2 for a flush, delim or response-end; false
// if they are not a pkt-line's.
func pktHeader(hdr []byte) (uint64, bool) {
	n, err := strconv.ParseUint(string(hdr), 16, 16)
	return n, err == nil && n != 3 && n <= pktMax
}

// readPkt reads one pkt-line, its length digits included.
func readPkt(r *bufio.Reader) ([]byte, error) {
	hdr, err := r.Peek(4)
	if err != nil {
		return nil, err
	}
	size, ok := pktSize(hdr)
	if !ok {
		return nil, errors.New("not a pkt-line")
	}
	b, err := r.Peek(size)
	if err != nil {
		return nil, err
	}
	pkt := slices.Clone(b)
	r.Discard(len(pkt))
	return pkt, nil
}

// request is one v2 command request: "command=NAME", capabilities, a
// delim-pkt, arguments, a flush-pkt.
type request struct {
	raw     []byte
	command string
	args    []string
}

func parseRequest(raw []byte) request {
	req := request{raw: slices.Clone(raw)}
	inArgs := false
	for len(raw) >= 4 {
		size, _ := strconv.ParseUint(string(raw[:4]), 16, 16)
		if size < 4 {
			inArgs = inArgs || size == 1
			raw = raw[4:]
			continue
		}
		line := strings.TrimSuffix(string(raw[4:size]), "\n")
		raw = raw[size:]
		switch {
		case inArgs:
			req.args = append(req.args, line)
		case strings.HasPrefix(line, "command="):
			req.command = strings.TrimPrefix(line, "command=")
		}
	}
	return req
}

// cacheable says whether the answer to fetch depends only on the request,
// the objects it names and the refs lsRefs listed: a fetch's last round
// ("done": no acknowledgments), no refs named to resolve now (want-ref,
// deepen-not), no packfile URIs, and tags followed only if ls-refs listed
// them all.
func (fetch request) cacheable(lsRefs request) bool {
	if !slices.Contains(fetch.args, "done") {
		return false
	}
	for _, a := range fetch.args {
		if strings.HasPrefix(a, "want-ref ") || strings.HasPrefix(a, "deepen-not ") || strings.HasPrefix(a, "packfile-uris ") {
			return false
		}
	}
	return !slices.Contains(fetch.args, "include-tag") || lsRefs.listsAllTags()
}

func (lsRefs request) listsAllTags() bool {
	prefixed := false
	for _, a := range lsRefs.args {
		if p, ok := strings.CutPrefix(a, "ref-prefix "); ok {
			prefixed = true
			if strings.HasPrefix("refs/tags/", p) {
				return true
			}
		}
	}
	return !prefixed
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
