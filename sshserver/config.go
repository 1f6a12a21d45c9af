package sshserver

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/gitssh-dev/gitssh/internal/packcache"
)

// Config holds the server's limits. A zero field takes the documented
// default; for durations and counts where it is said so, a negative value
// turns the limit off.
type Config struct {
	// User is the only SSH user name accepted. Default "git".
	User string
	// LoginGraceTime bounds the whole handshake, key exchange and
	// authentication included. Default 30s.
	LoginGraceTime time.Duration
	// MaxAuthTries is the number of failed authentication attempts (keys
	// offered and refused count) before the connection is cut. Default 6.
	MaxAuthTries int
	// MaxStartups bounds connections still in the handshake, as OpenSSH's
	// MaxStartups: past Start, a new one is dropped with probability Rate%,
	// rising linearly to 100% at Full. Default 128:30:512.
	MaxStartups MaxStartups
	// MaxStartupsPerSource caps the handshakes one source may hold; more are
	// closed at once. A source is an IPv4 address or an IPv6 /64 (see
	// sourceOf). Default 64; negative turns it off.
	MaxStartupsPerSource int
	// ProxyProtocol reads a PROXY protocol v1 or v2 header, sent by a load
	// balancer before the SSH bytes, for the client's real address: the one
	// every log line, MaxStartupsPerSource and PerSourcePenalties use. The
	// header is read on the connection's goroutine within LoginGraceTime.
	// Default ProxyProtocolOff.
	ProxyProtocol ProxyProtocol
	// ProxyProtocolTrustedCIDRs are the load balancers' addresses: only a TCP
	// peer in them may send a header; one from elsewhere is refused. Needed
	// unless ProxyProtocol is off.
	ProxyProtocolTrustedCIDRs CIDRs
	// PerSourcePenalties refuses, for a growing time, sources whose
	// connections keep failing to log in, as OpenSSH's PerSourcePenalties.
	// Default DefaultPenalties; Penalties{Off: true} turns them off.
	PerSourcePenalties Penalties
	// PenaltyExemptCIDRs are never penalised (sources in them are still
	// counted against MaxStartupsPerSource), e.g. a CI runner's address.
	PenaltyExemptCIDRs CIDRs
	// PenaltyMaxSources bounds the sources remembered for penalties; when
	// full, the one penalised longest ago is forgotten. Default 65536.
	PenaltyMaxSources int
	// MaxConns caps all connections; more are closed at once. Default 1024.
	MaxConns int
	// MaxSessionsPerConn caps open session channels on one connection.
	// Default 10, as OpenSSH's MaxSessions.
	MaxSessionsPerConn int
	// IdleTimeout closes an authenticated connection that has had no open
	// session for this long. Default 2m; negative turns it off.
	IdleTimeout time.Duration
	// KeepaliveInterval is how often a keepalive@openssh.com request is sent;
	// after KeepaliveCountMax unanswered ones the connection is cut.
	// Defaults 15s and 3; a negative interval turns keepalives off.
	KeepaliveInterval time.Duration
	KeepaliveCountMax int
	// MaxSessionDuration kills a git command running longer. Default 0: none.
	MaxSessionDuration time.Duration
	// ShutdownGracePeriod bounds how long Shutdown waits for running
	// commands, on top of Shutdown's context. Default 30s.
	ShutdownGracePeriod time.Duration
	// CopyBufferSize is the buffer used for each stream between the SSH
	// channel and git. Default 128 KiB.
	CopyBufferSize int
	// GitBinary is the git executable, looked up in PATH. Default "git".
	GitBinary string
	// GitHooksDir is the hooks directory for every repository (git's
	// core.hooksPath), a directory pushers cannot write. Default "": no hooks
	// run, not even those in a repository's own hooks/.
	GitHooksDir string
	// MaxPushSize bounds the pack a push may send, in bytes (git's
	// receive.maxInputSize); a larger push is refused and nothing of it is
	// kept. Default 1 GiB; negative: no limit.
	MaxPushSize int64
	// ServerVersion is the SSH identification string. Default "SSH-2.0-gitssh".
	ServerVersion string

	// Metrics counts connections, logins and git commands (NewMetrics).
	// Default nil: nothing is counted.
	Metrics *Metrics

	// TrustedUserCAs are the certificate authorities whose user certificates log in (see
	// certificates.go), replaceable while the server runs. Default nil: certificates are
	// refused.
	TrustedUserCAs *TrustedUserCAs
	// PackCache, when its Dir is set, serves identical fetches (CI jobs
	// cloning one commit at once) from one git pack-objects run; see
	// internal/packcache. The server sets its Command, GitBinary and Log.
	// Default: off.
	PackCache packcache.Config

	// MaxUploadPacks bounds the clones, fetches and archives (git upload-pack
	// and upload-archive) running at once on this server, and
	// MaxUploadPacksPerRepo those of one repository. More wait in line, up to
	// UploadQueueTimeout, and are then refused with a message that says so.
	// With the pack cache, what waits for a turn is upload-pack's
	// pack-objects run: a miss or a bypass takes one, a hit none.
	// Defaults: twice the CPUs this process may use (GOMAXPROCS), and half of
	// MaxUploadPacks; negative turns a bound off. Default timeout 2m.
	MaxUploadPacks        int
	MaxUploadPacksPerRepo int
	UploadQueueTimeout    time.Duration
	// PackThreads and PackWindowMemory are git's pack.threads and
	// pack.windowMemory (bytes, per thread) for every command; see
	// PackSettings. 0: git's defaults.
	PackThreads      int
	PackWindowMemory int64

	// Ciphers are the ciphers offered, each one of SupportedCiphers. The
	// client takes the first of its own list that is offered, so this set
	// decides which of the client's preferences can win; its order does not
	// matter. Default DefaultCiphers.
	Ciphers []string
}

// Defaults.
const (
	DefaultUser                 = "git"
	DefaultLoginGraceTime       = 30 * time.Second
	DefaultMaxAuthTries         = 6
	DefaultMaxStartupsPerSource = 64
	DefaultMaxConns             = 1024
	DefaultProxyProtocol        = ProxyProtocolOff
	DefaultMaxSessionsPerConn   = 10
	DefaultIdleTimeout          = 2 * time.Minute
	DefaultKeepaliveInterval    = 15 * time.Second
	DefaultKeepaliveCountMax    = 3
	DefaultShutdownGracePeriod  = 30 * time.Second
	DefaultCopyBufferSize       = 128 << 10
	DefaultGitBinary            = "git"
	DefaultServerVersion        = "SSH-2.0-gitssh"
	// DefaultMaxPushSize is half of GitHub's 2 GiB push limit and a tenth of
	// the chart's default 10Gi volume: one push cannot fill the volume, and the
	// pack waits in quarantine (on the same volume) until it is checked.
	DefaultMaxPushSize int64 = 1 << 30
	// DefaultUploadQueueTimeout is long enough for a CI fan-out to be served
	// a few at a time, short enough that a client is not left hanging.
	DefaultUploadQueueTimeout = 2 * time.Minute
)

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func (c Config) withDefaults() (Config, error) {
	c.User = orDefault(c.User, DefaultUser)
	c.LoginGraceTime = orDefault(c.LoginGraceTime, DefaultLoginGraceTime)
	c.MaxAuthTries = orDefault(c.MaxAuthTries, DefaultMaxAuthTries)
	c.MaxStartups = orDefault(c.MaxStartups, DefaultMaxStartups)
	c.MaxStartupsPerSource = orDefault(c.MaxStartupsPerSource, DefaultMaxStartupsPerSource)
	c.MaxConns = orDefault(c.MaxConns, DefaultMaxConns)
	c.ProxyProtocol = orDefault(c.ProxyProtocol, DefaultProxyProtocol)
	c.PerSourcePenalties = orDefault(c.PerSourcePenalties, DefaultPenalties)
	c.PenaltyMaxSources = orDefault(c.PenaltyMaxSources, DefaultPenaltyMaxSources)
	c.MaxSessionsPerConn = orDefault(c.MaxSessionsPerConn, DefaultMaxSessionsPerConn)
	c.IdleTimeout = orDefault(c.IdleTimeout, DefaultIdleTimeout)
	c.KeepaliveInterval = orDefault(c.KeepaliveInterval, DefaultKeepaliveInterval)
	c.KeepaliveCountMax = orDefault(c.KeepaliveCountMax, DefaultKeepaliveCountMax)
	c.ShutdownGracePeriod = orDefault(c.ShutdownGracePeriod, DefaultShutdownGracePeriod)
	c.CopyBufferSize = orDefault(c.CopyBufferSize, DefaultCopyBufferSize)
	c.GitBinary = orDefault(c.GitBinary, DefaultGitBinary)
	c.ServerVersion = orDefault(c.ServerVersion, DefaultServerVersion)
	c.MaxPushSize = orDefault(c.MaxPushSize, DefaultMaxPushSize)
	c.MaxUploadPacks = orDefault(c.MaxUploadPacks, defaultMaxUploadPacks())
	perRepo := -1
	if c.MaxUploadPacks > 0 {
		perRepo = max(1, c.MaxUploadPacks/2)
	}
	c.MaxUploadPacksPerRepo = orDefault(c.MaxUploadPacksPerRepo, perRepo)
	c.UploadQueueTimeout = orDefault(c.UploadQueueTimeout, DefaultUploadQueueTimeout)
	if len(c.Ciphers) == 0 {
		c.Ciphers = DefaultCiphers
	}
	for _, name := range c.Ciphers {
		if !slices.Contains(SupportedCiphers, name) {
			return c, fmt.Errorf("cipher %q is not supported: use one or more of %s", name, strings.Join(SupportedCiphers, ", "))
		}
	}
	if err := c.MaxStartups.validate(); err != nil {
		return c, fmt.Errorf("MaxStartups %s: %w", c.MaxStartups, err)
	}
	if err := c.PerSourcePenalties.validate(); err != nil {
		return c, fmt.Errorf("PerSourcePenalties %s: %w", c.PerSourcePenalties, err)
	}
	if err := c.ProxyProtocol.UnmarshalText([]byte(c.ProxyProtocol)); err != nil {
		return c, fmt.Errorf("ProxyProtocol: %w", err)
	}
	switch {
	case c.ProxyProtocol != ProxyProtocolOff && len(c.ProxyProtocolTrustedCIDRs) == 0:
		return c, fmt.Errorf("ProxyProtocol %s needs ProxyProtocolTrustedCIDRs, the load balancers' addresses: a header from any other address is refused", c.ProxyProtocol)
	case c.PenaltyMaxSources < 0:
		return c, fmt.Errorf("PenaltyMaxSources must be positive")
	case c.LoginGraceTime < 0:
		return c, fmt.Errorf("LoginGraceTime must be positive")
	case c.MaxAuthTries < 0, c.MaxConns < 0, c.MaxSessionsPerConn < 0, c.KeepaliveCountMax < 0:
		return c, fmt.Errorf("connection, session and auth limits must be positive")
	case c.MaxSessionDuration < 0 || c.ShutdownGracePeriod < 0:
		return c, fmt.Errorf("MaxSessionDuration and ShutdownGracePeriod must not be negative")
	case c.UploadQueueTimeout < 0 || c.PackThreads < 0 || c.PackWindowMemory < 0:
		return c, fmt.Errorf("UploadQueueTimeout, PackThreads and PackWindowMemory must not be negative")
	case c.CopyBufferSize < 4096:
		return c, fmt.Errorf("CopyBufferSize must be at least 4096")
	case c.GitHooksDir != "" && !filepath.IsAbs(c.GitHooksDir):
		// A relative core.hooksPath is taken inside each repository.
		return c, fmt.Errorf("GitHooksDir must be an absolute path, not %q", c.GitHooksDir)
	}
	return c, nil
}

// Ciphers.
var (
	// DefaultCiphers is AES-GCM only, because the client picks: OpenSSH's
	// client lists chacha20-poly1305 first and AES-CTR before AES-GCM, so a
	// server that offers either gets it. x/crypto has no amd64 assembly for
	// chacha20, and AES-CTR needs an HMAC-SHA2 on top: on the data path each
	// costs about 4 times the CPU of AES-GCM, and a clone costs the server up
	// to 1.4 times the CPU (hack/bench/README.md). Every OpenSSH since 6.2,
	// PuTTY since 0.76, libssh2 since 1.11 and Go's client speak AES-GCM.
	DefaultCiphers = []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM}
	// SupportedCiphers are the ciphers Config.Ciphers may name: AEADs, and
	// AES-CTR with the etm MACs, for clients without AES-GCM.
	SupportedCiphers = []string{
		ssh.CipherAES128GCM, ssh.CipherAES256GCM, ssh.CipherChaCha20Poly1305,
		ssh.CipherAES128CTR, ssh.CipherAES192CTR, ssh.CipherAES256CTR,
	}
)

// Algorithms: modern only. Strict KEX (CVE-2023-48795) is always offered by
// x/crypto's server side; the curve25519 entry also enables the libssh.org alias.
var (
	keyExchanges = []string{ssh.KeyExchangeMLKEM768X25519, ssh.KeyExchangeCurve25519}
	macs         = []string{ssh.HMACSHA256ETM, ssh.HMACSHA512ETM}
	// publicKeyAuthAlgorithms leaves out ssh-dss and SHA-1 ssh-rsa signatures.
	publicKeyAuthAlgorithms = []string{
		ssh.KeyAlgoED25519, ssh.KeyAlgoSKED25519,
		ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521, ssh.KeyAlgoSKECDSA256,
		ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256,
	}
)

// minClientRSABits is the smallest RSA user key accepted.
const minClientRSABits = 2048
