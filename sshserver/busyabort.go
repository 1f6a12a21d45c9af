package sshserver

import (
	"bytes"
	"io"
	"strconv"
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

	off  bool    // not pkt-lines: pass everything
	hdr  [4]byte // a header cut by the end of a write
	nhdr int
	left int    // payload bytes of a large pkt-line still to pass
	held []byte // a small pkt-line cut by the end of a write, header included
	need int    // its full length
}

func (f *busyAbortFilter) Write(p []byte) (int, error) {
	if f.off {
		return f.w.Write(p)
	}
	start, i := 0, 0 // p[start:i] is passed on as one write
	flush := func(end int) error {
		if end > start {
			if _, err := f.w.Write(p[start:end]); err != nil {
				return err
			}
		}
		start = end
		return nil
	}
	for i < len(p) {
		switch {
		case f.left > 0:
			n := min(f.left, len(p)-i)
			f.left -= n
			i += n
		case f.need > 0: // completing a held pkt-line
			n := min(f.need-len(f.held), len(p)-i)
			f.held = append(f.held, p[i:i+n]...)
			i += n
			start = i
			if len(f.held) == f.need {
				if f.keep(f.held) {
					if _, err := f.w.Write(f.held); err != nil {
						return 0, err
					}
				}
				f.held, f.need = f.held[:0], 0
			}
		default: // at a header
			if f.nhdr > 0 || len(p)-i < 4 {
				n := min(4-f.nhdr, len(p)-i)
				if f.nhdr == 0 {
					if err := flush(i); err != nil {
						return 0, err
					}
				}
				copy(f.hdr[f.nhdr:], p[i:i+n])
				f.nhdr += n
				i += n
				start = i
				if f.nhdr < 4 {
					continue
				}
				f.nhdr = 0
				size, ok := pktSize(f.hdr[:])
				if !ok {
					f.off = true
					if _, err := f.w.Write(f.hdr[:]); err != nil {
						return 0, err
					}
					_, err := f.w.Write(p[i:])
					return len(p), err
				}
				if size <= heldPktMax {
					f.held, f.need = append(f.held[:0], f.hdr[:]...), size
					if size == len(f.held) { // flush, delim or response end
						if _, err := f.w.Write(f.held); err != nil {
							return 0, err
						}
						f.held, f.need = f.held[:0], 0
					}
					continue
				}
				if _, err := f.w.Write(f.hdr[:]); err != nil {
					return 0, err
				}
				f.left = size - 4
				continue
			}
			size, ok := pktSize(p[i : i+4])
			switch {
			case !ok:
				f.off = true
				_, err := f.w.Write(p[start:])
				return len(p), err
			case size > heldPktMax:
				f.left = size - 4
				i += 4
			case len(p)-i < size: // a small pkt-line the write cut: hold it
				if err := flush(i); err != nil {
					return 0, err
				}
				f.held, f.need = append(f.held[:0], p[i:]...), size
				return len(p), nil
			default:
				if !f.keep(p[i : i+size]) {
					if err := flush(i); err != nil {
						return 0, err
					}
					start = i + size
				}
				i += size
			}
		}
	}
	if err := flush(i); err != nil {
		return 0, err
	}
	return len(p), nil
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

// pktSize reads a pkt-line header: the line's length, header included; 0,
// 1 and 2 (flush, delim, response end) are 4 bytes long.
func pktSize(hdr []byte) (int, bool) {
	n, err := strconv.ParseUint(string(hdr), 16, 16)
	switch {
	case err != nil, n == 3:
		return 0, false
	case n < 4:
		return 4, true
	}
	return int(n), true
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
