package sshserver

import (
	"context"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/ssh"

	"github.com/gitssh-dev/gitssh/internal/authorizer"
)

// Permissions extensions carrying the verified identity.
const (
	extUser         = "gitssh-user"
	extKeyNamespace = "gitssh-key-namespace"
	extKeyName      = "gitssh-key-name"
	extFingerprint  = "gitssh-fingerprint"
	// A deploy key's project, OWNER/NAME, and access ("read" or "write").
	extDeployProject = "gitssh-deploy-project"
	extDeployAccess  = "gitssh-deploy-access"
)

// conn is one client connection, from accept to close.
type conn struct {
	s      *Server
	nc     net.Conn
	remote string    // the client's address, from the PROXY header when one is honoured
	start  time.Time // accepted
	log    logr.Logger
	ctx    context.Context // ends when the connection closes or on forced shutdown
	cancel context.CancelFunc
	id     Identity
	// forced is the force-command of the certificate that logged in: it runs instead of
	// any command the client asks for.
	forced string

	// source is what MaxStartupsPerSource and PerSourcePenalties count the
	// client as, once admitted (sourceCounted); delay is the penalty wait
	// before its handshake. Set under s.mu, before the handshake.
	source        netip.Prefix
	sourceCounted bool
	delay         time.Duration

	// guarded by s.mu
	sessions int
	idle     *time.Timer
}

// newConn starts the login grace time at accept: nothing a silent client
// does can hold a handshake slot longer.
func newConn(s *Server, nc net.Conn) *conn {
	start := time.Now()
	nc.SetDeadline(start.Add(s.cfg.LoginGraceTime))
	ctx, cancel := context.WithCancel(s.killCtx)
	remote := nc.RemoteAddr().String()
	return &conn{s: s, nc: nc, remote: remote, start: start, ctx: ctx, cancel: cancel,
		log: s.log.WithValues("remote", remote)}
}

func (c *conn) close() {
	c.cancel()
	c.nc.Close()
}

// authState follows one handshake: which registered keys were offered, and which of
// them were refused as expired.
type authState struct {
	mu      sync.Mutex
	offered map[string]Identity
	expired map[string]Identity
	refused int        // keys or users refused
	conn    *spokeConn // the connection the handshake ran on
}

func (st *authState) refuse(err error) (*ssh.Permissions, error) {
	st.mu.Lock()
	st.refused++
	st.mu.Unlock()
	return nil, err
}

func (c *conn) serverConfig(st *authState) *ssh.ServerConfig {
	cfg := &ssh.ServerConfig{
		Config: ssh.Config{
			KeyExchanges: keyExchanges,
			Ciphers:      c.s.cfg.Ciphers,
			MACs:         macs,
		},
		PublicKeyAuthAlgorithms: publicKeyAuthAlgorithms,
		MaxAuthTries:            c.s.cfg.MaxAuthTries,
		ServerVersion:           c.s.cfg.ServerVersion,
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if meta.User() != c.s.cfg.User {
				return st.refuse(errWrongUser)
			}
			if cert, ok := key.(*ssh.Certificate); ok {
				return c.certificate(cert, false)
			}
			if err := CheckClientKey(key); err != nil {
				return st.refuse(err)
			}
			fp := ssh.FingerprintSHA256(key)
			id, ok := c.s.auth.UserForKey(fp)
			if !ok {
				if id, expired := c.s.auth.ExpiredKey(fp); expired {
					st.mu.Lock()
					st.expired[fp] = id
					st.mu.Unlock()
				}
				return st.refuse(errUnknownKey)
			}
			st.mu.Lock()
			st.offered[fp] = id
			st.mu.Unlock()
			return &ssh.Permissions{}, nil
		},
		// The identity is taken here, once the signature is verified, and
		// looked up again: the key may have been revoked since it was offered.
		VerifiedPublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey, _ *ssh.Permissions, _ string) (*ssh.Permissions, error) {
			if cert, ok := key.(*ssh.Certificate); ok {
				return c.certificate(cert, true)
			}
			id, ok := c.s.auth.UserForKey(ssh.FingerprintSHA256(key))
			if !ok {
				return st.refuse(errKeyRevoked)
			}
			ext := map[string]string{
				extUser:         id.User,
				extKeyNamespace: id.Key.Namespace,
				extKeyName:      id.Key.Name,
				extFingerprint:  id.Fingerprint,
			}
			if d := id.Deploy; d != nil {
				ext[extDeployProject], ext[extDeployAccess] = d.Owner+"/"+d.Name, d.Access.String()
			}
			return &ssh.Permissions{Extensions: ext}, nil
		},
		AuthLogCallback: func(_ ssh.ConnMetadata, method string, err error) {
			c.s.cfg.Metrics.authAttempt(method, err)
		},
	}
	for _, k := range c.s.hostKeys {
		cfg.AddHostKey(k)
	}
	return cfg
}

// CheckClientKey says why a user key may not log in: certificates (a certificate logs in
// through a trusted CA, never as a registered key), DSA keys and RSA keys under 2048 bits.
// The controllers apply the same rule when they register a key, so a key shown as Ready is
// one the server accepts.
func CheckClientKey(key ssh.PublicKey) error {
	if _, ok := key.(*ssh.Certificate); ok {
		return errors.New("certificates are not accepted")
	}
	switch key.Type() {
	case ssh.KeyAlgoRSA:
		ck, ok := key.(ssh.CryptoPublicKey)
		if !ok {
			return errors.New("unreadable RSA key")
		}
		if rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey); !ok || rk.N.BitLen() < minClientRSABits {
			return errors.New("RSA key too short")
		}
	//lint:ignore SA1019 naming the deprecated DSA algorithm is how we refuse it
	case ssh.InsecureKeyAlgoDSA:
		return errors.New("DSA keys are not accepted")
	}
	return nil
}

func identityFrom(p *ssh.Permissions) Identity {
	e := p.Extensions
	id := Identity{User: e[extUser], Fingerprint: e[extFingerprint], CA: e[extCA]}
	id.Key.Namespace, id.Key.Name = e[extKeyNamespace], e[extKeyName]
	if owner, name, ok := strings.Cut(e[extDeployProject], "/"); ok {
		id.Deploy = &authorizer.Deploy{Owner: owner, Name: name, Access: authorizer.AccessRead}
		if e[extDeployAccess] == authorizer.AccessWrite.String() {
			id.Deploy.Access = authorizer.AccessWrite
		}
	}
	return id
}

func (c *conn) serve() {
	start := c.start
	defer c.s.forget(c)
	defer c.close()

	st := &authState{offered: map[string]Identity{}, expired: map[string]Identity{}}
	sc, chans, globalReqs, err := c.handshake(st)
	stay := c.s.handshakeDone(c)
	outcome := outcomeAuthenticated
	if err != nil {
		outcome = handshakeOutcome(err)
	}
	defer func() { c.s.cfg.Metrics.closed(outcome) }()
	var refusal connRefusal
	if errors.As(err, &refusal) {
		outcome = outcomeLimit
		c.s.cfg.Metrics.droppedAfterAccept(refusal.reason)
		kv := []any{"limit", refusal.reason}
		if h, ok := refusal.err.(proxyHeaderError); ok {
			c.s.cfg.Metrics.proxyHeaderRefused(h)
		}
		if refusal.err != nil {
			kv = append(kv, "reason", refusal.err.Error())
		}
		c.log.V(1).Info("Refused connection", kv...)
		return
	}
	var verified string
	if err == nil {
		c.id = identityFrom(sc.Permissions)
		c.forced = sc.Permissions.Extensions[extForceCommand]
		verified = c.id.Fingerprint
	}
	for fp, id := range st.offered {
		if fp != verified {
			st.refused++
			c.s.rec.KeyRefused(id)
			c.s.cfg.Metrics.offeredWithoutProof()
			c.log.Info("Refused key offered without proof", "user", id.String(), "key", id.Key.String(), "fingerprint", fp)
		}
	}
	// Once per key and connection, however often the client offered it.
	for fp, id := range st.expired {
		c.s.rec.KeyRefused(id)
		c.log.Info("Refused expired key", "user", id.String(), "key", id.Key.String(), "fingerprint", fp)
	}
	if err != nil {
		c.log.V(1).Info("Refused login", "reason", err.Error(), "duration", time.Since(start))
		c.penalise(st)
		return
	}
	c.nc.SetDeadline(time.Time{})
	st.conn.joinGCMWrites(c.s.cfg.Ciphers)
	c.log = c.log.WithValues(identityLogValues(sc.Permissions, c.id)...)
	c.s.rec.LoginSucceeded(c.id)
	c.log.V(1).Info("Accepted login", "clientVersion", string(sc.ClientVersion()))
	defer func() { c.log.Info("Closed connection", "duration", time.Since(start)) }()
	if !stay {
		return
	}

	go c.refuseGlobalRequests(globalReqs)
	if c.s.cfg.KeepaliveInterval > 0 {
		go c.keepalive(sc)
	}
	if c.s.cfg.IdleTimeout > 0 {
		c.s.mu.Lock()
		c.idle = time.AfterFunc(c.s.cfg.IdleTimeout, func() {
			c.log.Info("Closed idle connection")
			c.close()
		})
		c.s.mu.Unlock()
		defer c.idle.Stop()
	}

	var sessions sync.WaitGroup
	for nc := range chans {
		if nc.ChannelType() != "session" {
			c.s.cfg.Metrics.requestRefused(channelRefusal(nc.ChannelType()))
			c.log.Info("Refused channel", "type", nc.ChannelType())
			nc.Reject(ssh.Prohibited, "gitssh only allows session channels")
			continue
		}
		if !c.s.sessionStarted(c) {
			nc.Reject(ssh.ResourceShortage, "too many sessions or shutting down")
			continue
		}
		sessions.Go(func() {
			defer c.s.sessionEnded(c)
			c.session(nc)
		})
	}
	c.cancel()
	sessions.Wait()
}

// connRefusal is why a connection was closed before its SSH handshake: the
// limit (a metrics label) and, for a PROXY header, what was wrong with it.
type connRefusal struct {
	reason dropReason
	err    error
}

func (r connRefusal) Error() string {
	if r.err != nil {
		return r.err.Error()
	}
	return string(r.reason)
}

// handshake reads the PROXY protocol header, if configured, admits the
// client's source, waits out its penalty delay, and runs the SSH handshake:
// all within the login grace time set at accept.
func (c *conn) handshake(st *authState) (*ssh.ServerConn, <-chan ssh.NewChannel, <-chan *ssh.Request, error) {
	nc := c.nc // c.nc stays the socket, for close from other goroutines
	if mode := c.s.cfg.ProxyProtocol; mode != ProxyProtocolOff {
		peer := c.nc.RemoteAddr()
		var client net.Addr
		var err error
		if nc, client, err = readProxyHeader(c.nc, mode, c.s.cfg.ProxyProtocolTrustedCIDRs); err != nil {
			return nil, nil, nil, connRefusal{dropProxyHeader, err}
		}
		if client != peer {
			c.remote = client.String()
			c.log = c.s.log.WithValues("remote", c.remote, "peer", peer.String())
		}
		if reason := c.s.admitSource(c, sourceOf(client)); reason != "" {
			return nil, nil, nil, connRefusal{reason: reason}
		}
	}
	if c.delay > 0 {
		c.log.V(1).Info("Delayed handshake for earlier failed logins", "source", c.source.String(), "delay", c.delay)
		t := time.NewTimer(c.delay)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			return nil, nil, nil, connRefusal{reason: dropShuttingDown}
		}
	}
	st.conn = &spokeConn{Conn: nc}
	return ssh.NewServerConn(st.conn, c.serverConfig(st))
}

// spokeConn notes whether the client sent anything at all.
type spokeConn struct {
	net.Conn
	spoke atomic.Bool

	// See joinGCMWrites.
	gcm  atomic.Bool
	held []byte
}

func (c *spokeConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && !c.spoke.Load() {
		c.spoke.Store(true)
	}
	return n, err
}

// joinGCMWrites makes each AES-GCM packet one write(2) instead of two, once
// the handshake has chosen AES-GCM for what the server sends. x/crypto writes a
// GCM packet as its 4-byte length, then the rest, through a 4 KiB
// bufio.Writer: a packet larger than that goes out as the buffer's first
// 4,096 bytes, then at once the remainder, in two syscalls (on loopback each
// also pays the receiver's TCP processing). A GCM packet is 4 + 16k + 16
// bytes, never 4,096, so a write of exactly 4,096 bytes is always such a
// first part: it is held and sent with the write that follows, in one
// writev(2). It is on only when every cipher offered is AES-GCM (the
// default): a re-key then cannot move the connection to a cipher whose
// packets are written whole, where a held 4,096-byte packet would wait for
// the connection's next write.
func (c *spokeConn) joinGCMWrites(offered []string) {
	c.gcm.Store(len(offered) > 0 && !slices.ContainsFunc(offered, func(cipher string) bool {
		return cipher != ssh.CipherAES128GCM && cipher != ssh.CipherAES256GCM
	}))
}

// gcmFirstPart is the size of x/crypto's bufio.Writer around the connection.
const gcmFirstPart = 4096

func (c *spokeConn) Write(b []byte) (int, error) {
	// x/crypto serialises its writes on a connection: no lock needed here.
	if len(c.held) > 0 {
		bufs := net.Buffers{c.held, b}
		n, err := bufs.WriteTo(c.Conn)
		c.held = c.held[:0]
		return max(0, int(n)-gcmFirstPart), err
	}
	if len(b) == gcmFirstPart && c.gcm.Load() && 4+int(binary.BigEndian.Uint32(b))+16 > gcmFirstPart {
		c.held = append(c.held, b...)
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// penalise counts a connection that ended without a login against its
// source: a failed authentication when a key or user was refused in it,
// else one that spoke SSH but never tried. One that sent nothing is a
// load balancer's or kube-proxy's TCP health check as often as a port scan:
// not counted, or a node's address would soon be refused for everyone
// behind it.
func (c *conn) penalise(st *authState) {
	kind, name := failedNoAuth, "noauth"
	switch {
	case st.refused > 0:
		kind, name = failedAuth, "authfail"
	case !st.conn.spoke.Load():
		return
	}
	if d := c.s.penalties.penalise(c.source, kind); d > 0 {
		c.log.Info("Penalised source for failed logins", "source", c.source.String(), "failure", name, "refusedFor", d)
	}
}

// refuseGlobalRequests answers no to tcpip-forward, streamlocal forwarding,
// keepalives from the client and anything else.
func (c *conn) refuseGlobalRequests(reqs <-chan *ssh.Request) {
	for r := range reqs {
		if t := globalRequestRefusal(r.Type); t != "" {
			c.s.cfg.Metrics.requestRefused(t)
		}
		if r.WantReply {
			r.Reply(false, nil)
		}
	}
}

// keepalive cuts the connection after KeepaliveCountMax unanswered keepalives.
func (c *conn) keepalive(sc *ssh.ServerConn) {
	t := time.NewTicker(c.s.cfg.KeepaliveInterval)
	defer t.Stop()
	answered := make(chan struct{}, 1)
	answered <- struct{}{}
	missed := 0
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		select {
		case <-answered:
			missed = 0
			go func() {
				if _, _, err := sc.SendRequest("keepalive@openssh.com", true, nil); err == nil {
					answered <- struct{}{}
				}
			}()
		default:
			missed++
			if missed >= c.s.cfg.KeepaliveCountMax {
				c.log.Info("Closed unresponsive connection", "keepalivesMissed", missed)
				c.close()
				return
			}
		}
	}
}
