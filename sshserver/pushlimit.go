package sshserver

import (
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/gitssh-dev/gitssh/internal/repostore"
)

// pushLimit returns the most pack bytes a push into repo may send, 0 for no
// limit, and the phrase that names it in the refusal: the smaller of "this
// server's limit of 1 GiB (--ssh-max-push-size)" and "the remaining 200 MiB of
// the repository's 1 GiB quota (GitProject spec.quota)". Every push limit is
// decided here. A negative limit means that the repository has reached its
// quota and no push may start; what is then the reason, for the client.
func (s *Server) pushLimit(repo Repository) (limit int64, what string) {
	if s.cfg.MaxPushSize > 0 {
		limit, what = s.cfg.MaxPushSize, fmt.Sprintf("this server's limit of %s (--ssh-max-push-size)", repostore.FormatSize(s.cfg.MaxPushSize))
	}
	if quota, quotaWhat := s.quotaLimit(repo); quota < 0 || quota > 0 && (limit == 0 || quota < limit) {
		return quota, quotaWhat
	}
	return limit, what
}

// quotaLimit returns how many pack bytes a push into repo may send under the
// repository's quota, and the phrase that names this limit; 0 when repo has no
// quota. The repository is measured on every push, on this replica, so that
// the quota holds without asking the API server, whichever replica took the
// last push. A negative limit: the quota is reached, and what says so.
func (s *Server) quotaLimit(repo Repository) (limit int64, what string) {
	if repo.Quota <= 0 {
		return 0, ""
	}
	used, err := repostore.DiskUsage(repo.Path)
	if err != nil {
		// git fails on such a repository too, with a message that says more than ours.
		s.log.Error(err, "Failed to measure a repository against its quota", "repository", repo.Owner+"/"+repo.Name)
		return 0, ""
	}
	left := repo.Quota - used
	if left <= 0 {
		return -1, fmt.Sprintf("repository %q uses %s of its %s quota; ask an admin of the project to raise spec.quota of its GitProject",
			repo.Owner+"/"+repo.Name, repostore.FormatSize(used), repostore.FormatSize(repo.Quota))
	}
	return left, fmt.Sprintf("the remaining %s of the repository's %s quota (GitProject spec.quota)",
		repostore.FormatSize(left), repostore.FormatSize(repo.Quota))
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
