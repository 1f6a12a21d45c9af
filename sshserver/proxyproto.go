package sshserver

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/pires/go-proxyproto"
)

// ProxyProtocol says whether a PROXY protocol header (v1 or v2), sent by a
// load balancer before the SSH bytes, gives the client's real address.
type ProxyProtocol string

const (
	// ProxyProtocolOff reads no header: the TCP peer is the client. A client
	// that sends one fails its SSH handshake.
	ProxyProtocolOff ProxyProtocol = "off"
	// ProxyProtocolOptional honours a header from a trusted address and
	// accepts connections without one (the TCP peer is then the client).
	ProxyProtocolOptional ProxyProtocol = "optional"
	// ProxyProtocolRequired refuses a connection without a header from a
	// trusted address.
	ProxyProtocolRequired ProxyProtocol = "required"
)

// UnmarshalText reads off, optional or required, for flag.TextVar.
func (p *ProxyProtocol) UnmarshalText(b []byte) error {
	switch v := ProxyProtocol(b); v {
	case ProxyProtocolOff, ProxyProtocolOptional, ProxyProtocolRequired:
		*p = v
		return nil
	}
	return fmt.Errorf("%q is not off, optional or required", b)
}

// MarshalText prints the mode.
func (p ProxyProtocol) MarshalText() ([]byte, error) { return []byte(p), nil }

// CIDRs is a list of address ranges; it reads and prints as
// "10.0.0.0/8,2001:db8::/32". A bare address is its own /32 or /128.
type CIDRs []netip.Prefix

// UnmarshalText reads a comma-separated list, for flag.TextVar; empty is none.
func (c *CIDRs) UnmarshalText(b []byte) error {
	var out CIDRs
	for s := range strings.SplitSeq(string(b), ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8 or an IP address", s)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		out = append(out, p.Masked())
	}
	*c = out
	return nil
}

// MarshalText prints the comma-separated list.
func (c CIDRs) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

func (c CIDRs) String() string {
	s := make([]string, len(c))
	for i, p := range c {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// Contains reports whether addr (a *net.TCPAddr; anything else is in none)
// is in one of the ranges.
func (c CIDRs) Contains(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	for _, p := range c {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// proxyHeaderError is why a connection's PROXY header was refused; its
// message is the reason logged.
type proxyHeaderError string

func (e proxyHeaderError) Error() string { return string(e) }

const (
	errProxyHeaderMalformed = proxyHeaderError("malformed PROXY protocol header")
	errProxyHeaderUntrusted = proxyHeaderError("PROXY protocol header from an address outside the trusted CIDRs")
	errProxyHeaderMissing   = proxyHeaderError("no PROXY protocol header")
	errProxyHeaderTimeout   = proxyHeaderError("no PROXY protocol header within the login grace time")
)

// readProxyHeader reads the PROXY protocol header, if any, from nc under
// nc's deadline (the login grace time), and returns the connection to speak
// SSH on and the client's address. It runs on the connection's goroutine,
// never in the accept loop: a relay that sends nothing holds only itself.
// Only the TCP peer's address decides whether a header is honoured.
func readProxyHeader(nc net.Conn, mode ProxyProtocol, trusted CIDRs) (net.Conn, net.Addr, error) {
	peer := nc.RemoteAddr()
	br := bufio.NewReaderSize(nc, 256) // a v1 header is at most 107 bytes
	bc := &bufferedConn{Conn: nc, r: br}
	// The library only parses. SSH clients speak first ("SSH-2.0-..."), so
	// the absence of a header shows at the first byte.
	h, err := proxyproto.Read(br)
	switch {
	case errors.Is(err, proxyproto.ErrNoProxyProtocol):
		h = nil
	case err != nil:
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			return nil, peer, errProxyHeaderTimeout
		case errors.As(err, &ne):
			return nil, peer, err // reset
		}
		return nil, peer, errProxyHeaderMalformed
	}
	switch {
	case h != nil && !trusted.Contains(peer):
		return nil, peer, errProxyHeaderUntrusted
	case h == nil && mode == ProxyProtocolRequired:
		return nil, peer, errProxyHeaderMissing
	case h == nil || h.Command.IsLocal():
		// LOCAL: the load balancer's own connection, e.g. a health check.
		return bc, peer, nil
	}
	src, ok := h.SourceAddr.(*net.TCPAddr)
	if !ok {
		return bc, peer, nil // UNSPEC or a Unix socket: no address to use
	}
	return bc, src, nil
}

// bufferedConn reads what the header reader buffered past the header before
// reading the connection again.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) {
	if c.r != nil {
		if c.r.Buffered() > 0 {
			return c.r.Read(b)
		}
		c.r = nil // drained: let the buffer go
	}
	return c.Conn.Read(b)
}
