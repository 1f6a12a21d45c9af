package sshserver

import (
	"bytes"
	"io"
	"sync"
	"sync/atomic"
)

// With the pack cache on, a fetch waits for its upload turn inside
// pack-objects' hook; when the wait times out, the hook tells the client the
// server is busy and fails, and upload-pack then adds, as it does for any
// pack-objects that fails, "aborting due to possible repository corruption
// on the remote side" (on side band 3, and on its stderr with
// "git-pack-objects died with error"). The repository is fine: these
// filters drop those lines once the busy message has passed, so the client
// reads why its fetch failed, and nothing that would send its user looking
// for corruption.

// busyMessage is how the hook's refusal starts (packcache's reportFailure,
// uploadSlots' message); upload-pack relays it on side band 2.
var busyMessage = []byte("gitssh: the server is busy")

// Upload-pack's lines after a failed pack-objects.
var (
	abortMessage = []byte("aborting due to possible repository corruption on the remote side")
	diedMessage  = []byte("git-pack-objects died with error")
)

// heldPktMax bounds the pkt-lines busyAbortFilter looks into: messages and
// refs. Larger ones, the pack's data, pass as they come.
const heldPktMax = 512

// busyAbortFilter passes upload-pack's output, pkt-lines, to the client,
// less the side band 3 abort line once a side band 2 line with the busy
// message went by. Output that is not pkt-lines passes untouched from there
// on. Writes are not split, except around a dropped line or a small
// pkt-line that a write cut in two.
type busyAbortFilter struct {
	w    io.Writer
	busy *atomic.Bool // set here, read by the stderr filter

	off  bool   // not pkt-lines: pass everything
	left int    // payload bytes of a large pkt-line still to pass
	held []byte // the start of a small pkt-line (or of a header) a write cut
}

func (f *busyAbortFilter) Write(p []byte) (int, error) {
	total := len(p)
	p, err := f.completeHeld(p)
	if err != nil {
		return 0, err
	}
	if f.off {
		_, err := f.w.Write(p)
		return total, err
	}
	start, i := 0, 0 // p[start:i] is passed on as one write
scan:
	for i < len(p) {
		if f.left > 0 {
			n := min(f.left, len(p)-i)
			f.left -= n
			i += n
			continue
		}
		if len(p)-i < 4 {
			f.held = append(f.held[:0], p[i:]...)
			break
		}
		size, ok := pktSize(p[i : i+4])
		switch {
		case !ok:
			f.off = true
			i = len(p)
		case size > heldPktMax:
			f.left = size - 4
			i += 4
		case len(p)-i < size:
			f.held = append(f.held[:0], p[i:]...)
			break scan
		case !f.keep(p[i : i+size]):
			if _, err := f.w.Write(p[start:i]); err != nil {
				return 0, err
			}
			i += size
			start = i
		default:
			i += size
		}
	}
	if i > start {
		if _, err := f.w.Write(p[start:i]); err != nil {
			return 0, err
		}
	}
	return total, nil
}

// completeHeld completes, from p, the pkt-line the last write cut, passes it
// on (or drops it) once it is whole, and returns the rest of p.
func (f *busyAbortFilter) completeHeld(p []byte) ([]byte, error) {
	for len(f.held) > 0 && len(p) > 0 {
		want := 4 // the header first
		if len(f.held) >= 4 {
			want, _ = pktSize(f.held[:4])
		}
		n := min(want-len(f.held), len(p))
		f.held, p = append(f.held, p[:n]...), p[n:]
		if len(f.held) < want {
			break
		}
		keep := true
		if want == 4 { // a whole header: hold on only for a small line's payload
			size, ok := pktSize(f.held)
			if ok && size > 4 && size <= heldPktMax {
				continue
			}
			f.off, f.left = !ok, max(0, size-4)
		} else {
			keep = f.keep(f.held)
		}
		if keep {
			if _, err := f.w.Write(f.held); err != nil {
				return nil, err
			}
		}
		f.held = f.held[:0]
	}
	return p, nil
}

// keep looks at a whole small pkt-line: it notes the busy message, and
// drops the abort line after it.
func (f *busyAbortFilter) keep(pkt []byte) bool {
	if len(pkt) < 5 {
		return true
	}
	switch payload := pkt[4:]; payload[0] {
	case 2:
		if bytes.Contains(payload, busyMessage) {
			f.busy.Store(true)
		}
	case 3:
		return !(f.busy.Load() && bytes.Contains(payload, abortMessage))
	}
	return true
}

// pktSize reads a pkt-line header: the line's length, header included (a
// flush, delim or response-end is 4 bytes long); false if it is none.
func pktSize(hdr []byte) (int, bool) {
	n, ok := pktHeader(hdr)
	return max(int(n), 4), ok
}

// busyAbortStderr drops upload-pack's own lines about the failed
// pack-objects from its stderr when the busy message went by on its stdout.
// Those lines can come first (a v2 answer's upload-pack writes its stderr at
// once, while its answer, busy message included, is read from the cache), so
// they are held until finish, which passes them on if no busy message came.
type busyAbortStderr struct {
	w    io.Writer
	busy *atomic.Bool

	mu   sync.Mutex
	held []byte
}

func (f *busyAbortStderr) Write(p []byte) (int, error) {
	if !bytes.Contains(p, abortMessage) && !bytes.Contains(p, diedMessage) {
		return f.w.Write(p)
	}
	var kept []byte
	for line := range bytes.Lines(p) {
		switch {
		case !bytes.Contains(line, abortMessage) && !bytes.Contains(line, diedMessage):
			kept = append(kept, line...)
		case !f.busy.Load():
			f.mu.Lock()
			f.held = append(f.held, line...)
			f.mu.Unlock()
		}
	}
	if len(kept) > 0 {
		if _, err := f.w.Write(kept); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// finish passes on the held lines, unless the busy message came.
func (f *busyAbortStderr) finish() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.held) > 0 && !f.busy.Load() {
		f.w.Write(f.held)
	}
	f.held = nil
}
