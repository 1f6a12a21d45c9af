package sshserver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// MaxStartups is OpenSSH's MaxStartups start:rate:full for connections that
// have not authenticated yet. Below Start every connection is admitted; from
// Start on a new one is dropped with probability Rate%, rising linearly to
// 100% at Full. A random early drop, unlike one hard cap, leaves a user some
// odds of getting in while others hold many handshakes open.
//
// It reads and prints as "start:rate:full"; a single number N means N:100:N,
// a hard cap of N.
type MaxStartups struct {
	Start, Rate, Full int
}

// DefaultMaxStartups leaves one source (DefaultMaxStartupsPerSource) unable to
// reach Start on its own, so no single address makes others' connections drop.
var DefaultMaxStartups = MaxStartups{Start: 128, Rate: 30, Full: 512}

// ParseMaxStartups reads "start:rate:full" or "N".
func ParseMaxStartups(s string) (MaxStartups, error) {
	var m MaxStartups
	return m, m.UnmarshalText([]byte(s))
}

// UnmarshalText reads "start:rate:full" or "N", for flag.TextVar.
func (m *MaxStartups) UnmarshalText(b []byte) error {
	parts := strings.Split(string(b), ":")
	nums := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("%q is not start:rate:full (e.g. 128:30:512) or one number", b)
		}
		nums[i] = n
	}
	var v MaxStartups
	switch len(nums) {
	case 1:
		v = MaxStartups{Start: nums[0], Rate: 100, Full: nums[0]}
	case 3:
		v = MaxStartups{Start: nums[0], Rate: nums[1], Full: nums[2]}
	default:
		return fmt.Errorf("%q is not start:rate:full (e.g. 128:30:512) or one number", b)
	}
	if err := v.validate(); err != nil {
		return fmt.Errorf("%q: %w", b, err)
	}
	*m = v
	return nil
}

// MarshalText prints "start:rate:full".
func (m MaxStartups) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

func (m MaxStartups) String() string { return fmt.Sprintf("%d:%d:%d", m.Start, m.Rate, m.Full) }

func (m MaxStartups) validate() error {
	switch {
	case m.Start < 1 || m.Full < m.Start:
		return errors.New("need 1 <= start <= full")
	case m.Rate < 1 || m.Rate > 100:
		return errors.New("rate is a percentage from 1 to 100")
	}
	return nil
}

// dropProbability is the chance that a new connection is refused while n
// others are in their handshake: OpenSSH's formula.
func (m MaxStartups) dropProbability(n int) float64 {
	switch {
	case n < m.Start:
		return 0
	case n >= m.Full:
		return 1
	}
	rate := float64(m.Rate) / 100
	return rate + (1-rate)*float64(n-m.Start)/float64(m.Full-m.Start)
}

// ipv6SourceBits groups IPv6 clients by /64: one host or LAN usually gets a
// whole /64, so counting single addresses would give it 2^64 sources.
// OpenSSH's PerSourceNetBlockSize defaults to 32:128; this is 32:64.
const ipv6SourceBits = 64

// sourceOf is the source a connection counts against in MaxStartupsPerSource
// and PerSourcePenalties: the client's IPv4 address, or its IPv6 /64. It is
// taken once: at accept from the TCP peer, or, with ProxyProtocol, from the
// header's address once it is read. An address that is not IP (a test's
// pipe) is one source.
func sourceOf(addr net.Addr) netip.Prefix {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Prefix{}
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = ipv6SourceBits
	}
	p, _ := ip.Prefix(bits)
	return p
}
