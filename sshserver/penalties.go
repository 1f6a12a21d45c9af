package sshserver

import (
	"container/list"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Penalties is OpenSSH's PerSourcePenalties for sources (see sourceOf) whose
// connections end without a login. Each such connection adds AuthFail when a
// key or user was refused in it, NoAuth when it spoke SSH but tried nothing (a
// scanner, ssh-keyscan, a client that timed out); one that sent nothing at all
// (a TCP health check) adds nothing. A key refused in a connection that then
// logs in adds nothing either: an agent may offer several keys first.
//
// Once a source's penalty reaches Min it is refused at connect for that long,
// and each later block of the same source is twice the last, up to Max.
// Before that its connections wait a tenth of its penalty before the server
// answers, so a retry loop slows down first. A source that fails nothing for
// Max is forgotten.
//
// It reads and prints as "authfail:5s,noauth:1s,min:15s,max:10m" (a key left
// out takes its default), or "off".
type Penalties struct {
	AuthFail, NoAuth, Min, Max time.Duration
	Off                        bool
}

// DefaultPenalties are OpenSSH's defaults for these four.
var DefaultPenalties = Penalties{AuthFail: 5 * time.Second, NoAuth: time.Second, Min: 15 * time.Second, Max: 10 * time.Minute}

// DefaultPenaltyMaxSources is OpenSSH's max-sources4; an entry takes about 280
// bytes (BenchmarkScan), so a full table about 18 MiB.
const DefaultPenaltyMaxSources = 65536

// UnmarshalText reads "authfail:5s,noauth:1s,min:15s,max:10m" or "off".
func (p *Penalties) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "off" {
		*p = Penalties{Off: true}
		return nil
	}
	v := DefaultPenalties
	for kv := range strings.SplitSeq(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, d, ok := strings.Cut(kv, ":")
		dur, err := time.ParseDuration(d)
		if !ok || err != nil {
			return fmt.Errorf("%q is not off or a list such as authfail:5s,noauth:1s,min:15s,max:10m", b)
		}
		switch k {
		case "authfail":
			v.AuthFail = dur
		case "noauth":
			v.NoAuth = dur
		case "min":
			v.Min = dur
		case "max":
			v.Max = dur
		default:
			return fmt.Errorf("%q: unknown key %q, expected authfail, noauth, min or max", b, k)
		}
	}
	if err := v.validate(); err != nil {
		return fmt.Errorf("%q: %w", b, err)
	}
	*p = v
	return nil
}

// MarshalText prints the form UnmarshalText reads.
func (p Penalties) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

func (p Penalties) String() string {
	if p.Off {
		return "off"
	}
	return fmt.Sprintf("authfail:%s,noauth:%s,min:%s,max:%s", p.AuthFail, p.NoAuth, p.Min, p.Max)
}

func (p Penalties) validate() error {
	switch {
	case p.Off:
		return nil
	case p.AuthFail < 0 || p.NoAuth < 0:
		return errors.New("authfail and noauth must not be negative")
	case p.Min <= 0 || p.Max < p.Min:
		return errors.New("need 0 < min <= max")
	}
	return nil
}

// failure is how a connection ended without a login.
type failure int

const (
	failedAuth failure = iota // a key or user was refused
	failedNoAuth
)

// penaltyBox remembers penalised sources in a table of at most max entries;
// when full, the source penalised longest ago is dropped, so memory stays
// flat whatever the number of sources.
type penaltyBox struct {
	cfg    Penalties
	exempt CIDRs
	max    int
	now    func() time.Time

	mu      sync.Mutex
	entries map[netip.Prefix]*list.Element // of *penalty
	lru     list.List                      // front: penalised most recently
}

type penalty struct {
	src      netip.Prefix
	score    time.Duration // accrued since the last block
	lastFail time.Time
	until    time.Time // refused until
	blocks   int       // blocks so far; each doubles the next
}

func newPenaltyBox(cfg Penalties, exempt CIDRs, max int) *penaltyBox {
	return &penaltyBox{cfg: cfg, exempt: exempt, max: max, now: time.Now, entries: map[netip.Prefix]*list.Element{}}
}

func (b *penaltyBox) exempted(src netip.Prefix) bool {
	for _, p := range b.exempt {
		if p.Contains(src.Addr()) {
			return true
		}
	}
	return false
}

// check says how long a new connection from src must wait before its
// handshake, or that it is refused (and for how much longer).
func (b *penaltyBox) check(src netip.Prefix) (delay, refusedFor time.Duration) {
	if b == nil {
		return 0, 0
	}
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	el, ok := b.entries[src]
	if !ok {
		return 0, 0
	}
	p := el.Value.(*penalty)
	if now.Before(p.until) {
		return 0, p.until.Sub(now)
	}
	if now.Sub(p.lastFail) > b.cfg.Max {
		return 0, 0
	}
	return p.score / 10, 0
}

// penalise adds a failed connection from src; it returns how long src is
// now refused, when this failure started a block.
func (b *penaltyBox) penalise(src netip.Prefix, f failure) (blockedFor time.Duration) {
	if b == nil || !src.IsValid() || b.exempted(src) {
		return 0
	}
	w := b.cfg.AuthFail
	if f == failedNoAuth {
		w = b.cfg.NoAuth
	}
	if w == 0 {
		return 0
	}
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	var p *penalty
	if el, ok := b.entries[src]; ok {
		p = el.Value.(*penalty)
		b.lru.MoveToFront(el)
		if now.Sub(p.lastFail) > b.cfg.Max && !now.Before(p.until) {
			*p = penalty{src: src} // quiet for Max: forgiven
		}
	} else {
		if len(b.entries) >= b.max {
			oldest := b.lru.Back()
			delete(b.entries, oldest.Value.(*penalty).src)
			b.lru.Remove(oldest)
		}
		p = &penalty{src: src}
		b.entries[src] = b.lru.PushFront(p)
	}
	p.lastFail = now
	if now.Before(p.until) {
		return 0 // a connection admitted before the block began
	}
	p.score += w
	if p.score < b.cfg.Min {
		return 0
	}
	blockedFor = p.score
	for i := 0; i < p.blocks && blockedFor < b.cfg.Max; i++ {
		blockedFor *= 2
	}
	blockedFor = min(blockedFor, b.cfg.Max)
	p.blocks++
	p.score = 0
	p.until = now.Add(blockedFor)
	return blockedFor
}

// refusing counts the sources refused now, for a gauge.
func (b *penaltyBox) refusing() int {
	if b == nil {
		return 0
	}
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, el := range b.entries {
		if now.Before(el.Value.(*penalty).until) {
			n++
		}
	}
	return n
}

// len is the table's size.
func (b *penaltyBox) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.entries)
}
