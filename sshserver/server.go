// Package sshserver is gitssh's SSH server: public-key login, session
// channels, and git's pack commands run on bare repositories. It knows SSH
// and git, nothing of Kubernetes: it asks an Authorizer and tells a Recorder.
package sshserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/ssh"

	"github.com/gitssh-dev/gitssh/internal/packcache"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("sshserver: server closed")

// Server is a git-over-SSH server. Create it with New.
type Server struct {
	cfg      Config
	hostKeys []ssh.Signer
	auth     Authorizer
	rec      Recorder
	log      logr.Logger
	// penalties is nil when PerSourcePenalties is off.
	penalties *penaltyBox
	// packCache is nil when Config.PackCache is off.
	packCache *packcache.Cache
	uploads   *uploadSlots

	// killAll ends every running command and connection (forced shutdown).
	killCtx context.Context
	killAll context.CancelFunc

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	unauth    int                  // connections in their handshake
	unauthBy  map[netip.Prefix]int // the same, by source
	draining  bool
	connsWG   sync.WaitGroup
}

// New returns a server. hostKeys must hold at least one signer (see
// internal/hostkeys); rec may be nil.
func New(cfg Config, hostKeys []ssh.Signer, auth Authorizer, rec Recorder, log logr.Logger) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("invalid SSH server config: %w", err)
	}
	if len(hostKeys) == 0 {
		return nil, errors.New("at least one host key is needed")
	}
	if auth == nil {
		return nil, errors.New("an Authorizer is needed")
	}
	if rec == nil {
		rec = NopRecorder{}
	}
	killCtx, killAll := context.WithCancel(context.Background())
	s := &Server{
		cfg: cfg, hostKeys: hostKeys, auth: auth, rec: rec, log: log,
		killCtx: killCtx, killAll: killAll,
		uploads:   newUploadSlots(cfg.MaxUploadPacks, cfg.MaxUploadPacksPerRepo),
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
		unauthBy:  map[netip.Prefix]int{},
	}
	if !cfg.PerSourcePenalties.Off {
		s.penalties = newPenaltyBox(cfg.PerSourcePenalties, cfg.PenaltyExemptCIDRs, cfg.PenaltyMaxSources)
	}
	cfg.Metrics.watchPenalties(s.penalties)
	if cfg.PackCache.Dir != "" {
		pc := cfg.PackCache
		pc.Command, pc.GitBinary, pc.Log = s.packObjects, cfg.GitBinary, log.WithName("packcache")
		pc.UploadPack = s.statelessUploadPack
		// A miss or a bypass runs pack-objects: it waits for an upload slot, as
		// upload-archive and (without the cache) upload-pack do.
		pc.Turn = func(ctx context.Context, dir string, stderr io.Writer) (func(), error) {
			return s.uploadTurn(ctx, dir, stderr, pc.Log.WithValues("command", "pack-objects", "path", dir))
		}
		if s.packCache, err = packcache.New(pc); err != nil {
			return nil, err
		}
		go s.packCache.Serve()
	}
	return s, nil
}

// ListenAndServe listens on the TCP address and serves until Shutdown.
func (s *Server) ListenAndServe(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(l)
}

// Serve accepts connections on l until Shutdown, then returns ErrServerClosed.
// It closes l when it returns.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		l.Close()
	}()
	s.log.Info("Started SSH server", "address", l.Addr().String(), "proxyProtocol", s.cfg.ProxyProtocol)
	// Behind a PROXY protocol load balancer the TCP peer is not the client,
	// whose address is only known once its connection's goroutine has read
	// the header: refusals here name the peer.
	peerKey := "remote"
	if s.cfg.ProxyProtocol != ProxyProtocolOff {
		peerKey = "peer"
	}

	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isDraining() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Error(err, "Failed to accept connection, retrying", "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.cfg.Metrics.accepted()
		c, reason := s.admit(nc)
		if c == nil {
			s.cfg.Metrics.dropped(reason)
			s.log.V(1).Info("Refused connection", peerKey, nc.RemoteAddr().String(), "limit", reason)
			nc.Close()
			continue
		}
		go c.serve()
	}
}

// admit registers a new connection, or says why not. It never blocks on the
// client: the accept loop calls it. Without the PROXY protocol the TCP peer
// is the client, and its source is checked here; with it, on the
// connection's goroutine once the header is read (see conn.handshake).
func (s *Server) admit(nc net.Conn) (*conn, dropReason) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.draining:
		return nil, dropShuttingDown
	case len(s.conns) >= s.cfg.MaxConns:
		return nil, dropMaxConns
	}
	var src netip.Prefix
	var delay time.Duration
	if s.cfg.ProxyProtocol == ProxyProtocolOff {
		src = sourceOf(nc.RemoteAddr())
		var reason dropReason
		if delay, reason = s.sourceAdmitsLocked(src); reason != "" {
			return nil, reason
		}
	}
	if rand.Float64() < s.cfg.MaxStartups.dropProbability(s.unauth) {
		return nil, dropMaxStartups
	}
	c := newConn(s, nc)
	s.conns[c] = struct{}{}
	s.unauth++
	s.connsWG.Add(1)
	s.cfg.Metrics.admitted()
	if s.cfg.ProxyProtocol == ProxyProtocolOff {
		s.countSourceLocked(c, src, delay)
	}
	return c, ""
}

// sourceAdmitsLocked says why src may not start another handshake, or how
// long its handshake waits first (see Penalties). s.mu is held.
func (s *Server) sourceAdmitsLocked(src netip.Prefix) (delay time.Duration, reason dropReason) {
	if s.cfg.MaxStartupsPerSource > 0 && s.unauthBy[src] >= s.cfg.MaxStartupsPerSource {
		return 0, dropMaxStartupsPerSource
	}
	delay, refusedFor := s.penalties.check(src)
	if refusedFor > 0 {
		return 0, dropPenalised
	}
	return delay, ""
}

// countSourceLocked counts c's handshake against its source. s.mu is held.
func (s *Server) countSourceLocked(c *conn, src netip.Prefix, delay time.Duration) {
	c.source, c.sourceCounted, c.delay = src, true, delay
	s.unauthBy[src]++
}

// admitSource is sourceAdmitsLocked and countSourceLocked for a connection
// whose source is known only after the PROXY protocol header.
func (s *Server) admitSource(c *conn, src netip.Prefix) dropReason {
	s.mu.Lock()
	defer s.mu.Unlock()
	delay, reason := s.sourceAdmitsLocked(src)
	if reason == "" {
		s.countSourceLocked(c, src, delay)
	}
	return reason
}

func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// Serving reports whether the server is accepting connections: Serve is
// running and Shutdown has not been called. Use it for readiness.
func (s *Server) Serving() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.draining && len(s.listeners) > 0
}

// Shutdown stops accepting connections, closes connections that run no
// command, and waits for running commands to finish and their clients to
// disconnect. When ctx ends or Config.ShutdownGracePeriod passes first, it
// kills the commands (their whole process groups), closes every connection
// and returns the context's error.
func (s *Server) Shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShutdownGracePeriod)
	defer cancel()

	s.mu.Lock()
	if !s.draining {
		s.draining = true
		for l := range s.listeners {
			l.Close()
		}
		for c := range s.conns {
			if c.sessions == 0 {
				c.close()
			}
		}
		s.log.Info("Shutting down SSH server", "connections", len(s.conns))
	}
	s.mu.Unlock()

	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			s.closePackCache()
			s.log.Info("Shut down SSH server")
			return nil
		}
		select {
		case <-ctx.Done():
			s.killAll()
			// A moment for each killed command's session to tell its client why
			// (see exec) before the connections are cut.
			for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
				s.mu.Lock()
				n := len(s.conns)
				s.mu.Unlock()
				if n == 0 {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			s.mu.Lock()
			for c := range s.conns {
				c.close()
			}
			s.mu.Unlock()
			s.connsWG.Wait()
			s.closePackCache()
			s.log.Info("Shut down SSH server, cutting running commands", "connections", n)
			return ctx.Err()
		case <-poll.C:
		}
	}
}

func (s *Server) closePackCache() {
	if s.packCache != nil {
		s.packCache.Close()
	}
}

// sessionStarted counts a session on c; false when draining or over the limit.
func (s *Server) sessionStarted(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining || c.sessions >= s.cfg.MaxSessionsPerConn {
		return false
	}
	c.sessions++
	s.cfg.Metrics.sessionStarted()
	if c.idle != nil {
		c.idle.Stop()
	}
	return true
}

func (s *Server) sessionEnded(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.sessions--
	s.cfg.Metrics.sessionEnded()
	if c.sessions > 0 {
		return
	}
	if s.draining {
		c.close()
	} else if c.idle != nil {
		c.idle.Reset(s.cfg.IdleTimeout)
	}
}

// authenticated moves c out of the unauthenticated count. It reports false
// when the server is draining and c should go.
func (s *Server) handshakeDone(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unauth--
	s.cfg.Metrics.handshakeDone()
	if !c.sourceCounted {
		return !s.draining
	}
	if s.unauthBy[c.source]--; s.unauthBy[c.source] == 0 {
		delete(s.unauthBy, c.source)
	}
	return !s.draining
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.connsWG.Done()
}
