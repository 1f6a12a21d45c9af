package sshserver

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
)

// pushLimit returns the most pack bytes a push into repo may send, 0 for no
// limit, and the phrase that names it in the refusal, e.g. "this server's
// limit of 1 GiB (--ssh-max-push-size)". Every push limit is decided here.
func (s *Server) pushLimit(_ Repository) (limit int64, what string) {
	if s.cfg.MaxPushSize < 0 {
		return 0, ""
	}
	return s.cfg.MaxPushSize, fmt.Sprintf("this server's limit of %s (--ssh-max-push-size)", formatBytes(s.cfg.MaxPushSize))
}

// packMeter counts the pack bytes of a receive-pack request: what the client
// sends from the "PACK" signature on, after its pkt-lines (ref updates, and
// push options or a certificate when those are on). receive.maxInputSize
// bounds exactly these bytes, and git exits 0 when it refuses a push, so a
// count above the limit is how we know the push was refused for its size.
// Bytes are counted before git is given them: git cannot have read more.
type packMeter struct {
	hdr    [4]byte // a pkt-line length, or "PACK", being read
	nhdr   int
	skip   int // payload bytes left in the current pkt-line
	inPack bool
	n      atomic.Int64
}

// Write never fails; only the copying goroutine calls it.
func (m *packMeter) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 && !m.inPack {
		if m.skip > 0 {
			k := min(m.skip, len(p))
			m.skip -= k
			p = p[k:]
			continue
		}
		k := copy(m.hdr[m.nhdr:], p)
		m.nhdr += k
		p = p[k:]
		if m.nhdr < len(m.hdr) {
			break
		}
		m.nhdr = 0
		l, err := strconv.ParseUint(string(m.hdr[:]), 16, 16)
		switch {
		case err != nil:
			// "PACK", or not pkt-line at all: everything from here is what
			// git reads as the pack.
			m.inPack = true
			m.n.Add(int64(len(m.hdr)))
		case l > 4:
			m.skip = int(l) - 4
		} // flush (0000) and delimiters carry no payload
	}
	if m.inPack {
		m.n.Add(int64(len(p)))
	}
	return total, nil
}

// Bytes returns the pack bytes seen so far.
func (m *packMeter) Bytes() int64 { return m.n.Load() }

// formatBytes writes n in binary units: "1 GiB", "1.5 MiB", "100 bytes".
func formatBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d bytes", n)
	}
	f, u := float64(n)/1024, 0
	for f >= 1024 && u < len(units)-1 {
		f /= 1024
		u++
	}
	s := strings.TrimSuffix(strconv.FormatFloat(f, 'f', 1, 64), ".0")
	return s + " " + units[u:u+1] + "iB"
}
