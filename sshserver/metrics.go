package sshserver

import (
	"errors"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"

	"github.com/gitssh-dev/gitssh/internal/promreg"
)

// Metrics counts what the server does, for Prometheus. Every label value
// comes from a short fixed list below: never a user, key, repository or
// address, so the number of series stays the same whatever clients send.
// Create it with NewMetrics and pass it as Config.Metrics; a nil *Metrics
// counts nothing.
type Metrics struct {
	connsAccepted  prometheus.Counter
	connsClosed    *prometheus.CounterVec // outcome
	connsDropped   *prometheus.CounterVec // limit
	connsInFlight  prometheus.Gauge
	handshakes     prometheus.Gauge
	sessions       prometheus.Gauge
	authAttempts   *prometheus.CounterVec // method, result
	gitCommands    *prometheus.CounterVec // service, result
	gitDuration    *prometheus.HistogramVec
	gitReceived    *prometheus.CounterVec // service
	gitSent        *prometheus.CounterVec // service
	pushesTooLarge prometheus.Counter
	uploadsWaiting prometheus.Gauge
	uploadTimeouts prometheus.Counter
	refused        *prometheus.CounterVec // type
	proxyHeaders   *prometheus.CounterVec // reason
	penalised      *penalisedSources
}

// How a connection ended: label outcome of gitssh_ssh_connections_closed_total.
const (
	outcomeAuthenticated   = "authenticated"    // logged in; closed later, for whatever reason
	outcomeRefused         = "refused"          // authentication failed or was given up
	outcomeHandshakeFailed = "handshake_failed" // version, key exchange or protocol error, or gone before authenticating
	outcomeTimeout         = "timeout"          // LoginGraceTime passed before a login
	outcomeLimit           = "limit"            // closed at accept by a limit: see dropReason
)

// dropReason says why a connection was closed at accept: label limit of
// gitssh_ssh_connections_dropped_total, and the log's reason.
type dropReason string

const (
	dropMaxConns             dropReason = "max_conns"
	dropMaxStartups          dropReason = "max_startups"
	dropMaxStartupsPerSource dropReason = "max_startups_per_source"
	dropShuttingDown         dropReason = "shutting_down"
	dropPenalised            dropReason = "penalty"      // PerSourcePenalties
	dropProxyHeader          dropReason = "proxy_header" // see gitssh_ssh_proxy_headers_refused_total
)

// Authentication results: label result of gitssh_ssh_auth_attempts_total.
const (
	authAccepted            = "accepted"
	authUnknownKey          = "unknown_key"
	authWeakKey             = "weak_key"
	authWrongUser           = "wrong_user"
	authRevoked             = "revoked"               // the key went between its offer and its signature
	authCertificateRefused  = "certificate_refused"   // a user certificate that may not log in (certificates.go)
	authOfferedWithoutProof = "offered_without_proof" // a registered key offered, never signed for
	authMethodNotAllowed    = "method_not_allowed"    // password, keyboard-interactive, ...
)

// The errors our callbacks refuse a key with, told apart by the metrics.
var (
	errWrongUser  = errors.New("wrong user")
	errUnknownKey = errors.New("unknown key")
	errKeyRevoked = errors.New("key revoked")
)

// Git command results: label result of gitssh_ssh_git_commands_total.
const (
	gitOK       = "ok"
	gitRefused  = "refused"   // access denied, malformed path, push too large, quota reached
	gitNotFound = "not_found" // no such project, or its repository is not there yet
	gitError    = "error"     // git failed, was killed, or could not start
)

// Refused requests: label type of gitssh_ssh_refused_requests_total.
const (
	requestShell          = "shell"
	requestPty            = "pty"
	requestSubsystem      = "subsystem"
	requestX11            = "x11"
	requestAgent          = "agent_forwarding"
	requestPortForwarding = "port_forwarding"
	requestUnknownCommand = "unknown_command"
	requestOtherChannel   = "other_channel"
)

var gitServices = []string{UploadPack, ReceivePack, UploadArchive}

// NewMetrics creates the server's metrics and registers them with reg. When
// they are registered already (several servers in one process, as in tests
// that share controller-runtime's registry) the registered ones are used, so
// the servers add up.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connsAccepted: promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gitssh_ssh_connections_accepted_total",
			Help: "TCP connections accepted by the SSH listener, before any limit.",
		})),
		connsClosed: promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitssh_ssh_connections_closed_total",
			Help: "SSH connections closed, by outcome: authenticated, refused, handshake_failed, timeout or limit.",
		}, []string{"outcome"})),
		connsDropped: promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitssh_ssh_connections_dropped_total",
			Help: "SSH connections closed at accept (outcome limit), by the limit that closed them.",
		}, []string{"limit"})),
		connsInFlight: promreg.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gitssh_ssh_connections_in_flight",
			Help: "SSH connections open now, logged in or not.",
		})),
		handshakes: promreg.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gitssh_ssh_handshakes_in_flight",
			Help: "SSH connections open now that have not logged in yet (what --ssh-max-startups bounds).",
		})),
		sessions: promreg.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gitssh_ssh_sessions_in_flight",
			Help: "SSH session channels open now.",
		})),
		authAttempts: promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitssh_ssh_auth_attempts_total",
			Help: "SSH authentication attempts, by method and result.",
		}, []string{"method", "result"})),
		gitCommands: promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitssh_ssh_git_commands_total",
			Help: "Git commands asked for, by service and result: ok, refused, not_found or error.",
		}, []string{"service", "result"})),
		gitDuration: promreg.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gitssh_ssh_git_command_duration_seconds",
			Help:    "Time git commands ran, from start to exit, by service.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}, []string{"service"})),
		gitReceived: promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitssh_ssh_git_received_bytes_total",
			Help: "Bytes git commands read from clients, by service.",
		}, []string{"service"})),
		gitSent: promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitssh_ssh_git_sent_bytes_total",
			Help: "Bytes git commands wrote to clients (output and messages), by service.",
		}, []string{"service"})),
		uploadsWaiting: promreg.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gitssh_ssh_upload_packs_waiting",
			Help: "Clones, fetches and archives waiting for a turn now (--ssh-max-upload-packs, --ssh-max-upload-packs-per-repo); with the pack cache, pack-objects runs waiting.",
		})),
		uploadTimeouts: promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gitssh_ssh_upload_pack_queue_timeouts_total",
			Help: "Clones, fetches and archives refused after waiting --ssh-upload-queue-timeout for a turn; with the pack cache, pack-objects runs that gave up waiting.",
		})),
		pushesTooLarge: promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gitssh_ssh_pushes_too_large_total",
			Help: "Pushes refused because their pack was larger than the push size limit or what is left of the repository's quota.",
		})),
		proxyHeaders: promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitssh_ssh_proxy_headers_refused_total",
			Help: "Connections closed for their PROXY protocol header, by reason: malformed, untrusted (from outside the trusted CIDRs), missing (required) or timeout.",
		}, []string{"reason"})),
		penalised: promreg.Register(reg, &penalisedSources{desc: prometheus.NewDesc("gitssh_ssh_penalised_sources",
			"Sources (IPv4 addresses or IPv6 /64s) refused now for failed logins (--ssh-per-source-penalties).", nil, nil)}),
		refused: promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitssh_ssh_refused_requests_total",
			Help: "Requests of logged-in clients that gitssh refuses, by type.",
		}, []string{"type"})),
	}
	// Every series exists from the start, at 0: rate() and alerts need no
	// first event to see a change.
	for _, o := range []string{outcomeAuthenticated, outcomeRefused, outcomeHandshakeFailed, outcomeTimeout, outcomeLimit} {
		m.connsClosed.WithLabelValues(o)
	}
	for _, r := range []dropReason{dropMaxConns, dropMaxStartups, dropMaxStartupsPerSource, dropShuttingDown, dropPenalised, dropProxyHeader} {
		m.connsDropped.WithLabelValues(string(r))
	}
	for _, r := range proxyHeaderRefusals {
		m.proxyHeaders.WithLabelValues(r)
	}
	for _, r := range []string{authAccepted, authUnknownKey, authWeakKey, authWrongUser, authRevoked, authCertificateRefused, authOfferedWithoutProof} {
		m.authAttempts.WithLabelValues("publickey", r)
	}
	for _, method := range []string{"password", "keyboard-interactive", "other"} {
		m.authAttempts.WithLabelValues(method, authMethodNotAllowed)
	}
	for _, s := range gitServices {
		s = serviceLabel(s)
		for _, r := range []string{gitOK, gitRefused, gitNotFound, gitError} {
			m.gitCommands.WithLabelValues(s, r)
		}
		m.gitDuration.WithLabelValues(s)
		m.gitReceived.WithLabelValues(s)
		m.gitSent.WithLabelValues(s)
	}
	for _, t := range []string{requestShell, requestPty, requestSubsystem, requestX11, requestAgent, requestPortForwarding, requestUnknownCommand, requestOtherChannel} {
		m.refused.WithLabelValues(t)
	}
	return m
}

// serviceLabel is "upload-pack" for "git-upload-pack".
func serviceLabel(service string) string { return strings.TrimPrefix(service, "git-") }

func (m *Metrics) accepted() {
	if m != nil {
		m.connsAccepted.Inc()
	}
}

func (m *Metrics) dropped(r dropReason) {
	if m != nil {
		m.connsDropped.WithLabelValues(string(r)).Inc()
		m.connsClosed.WithLabelValues(outcomeLimit).Inc()
	}
}

// admitted: a connection starts its handshake.
func (m *Metrics) admitted() {
	if m != nil {
		m.connsInFlight.Inc()
		m.handshakes.Inc()
	}
}

// droppedAfterAccept: a connection admitted at accept was closed on its
// goroutine before its SSH handshake, by a limit that needed its PROXY
// header or by a penalty; closed counts it as outcome limit.
func (m *Metrics) droppedAfterAccept(r dropReason) {
	if m != nil {
		m.connsDropped.WithLabelValues(string(r)).Inc()
	}
}

// Reasons a PROXY header is refused: label reason of
// gitssh_ssh_proxy_headers_refused_total.
var proxyHeaderRefusals = map[proxyHeaderError]string{
	errProxyHeaderMalformed: "malformed",
	errProxyHeaderUntrusted: "untrusted",
	errProxyHeaderMissing:   "missing",
	errProxyHeaderTimeout:   "timeout",
}

func (m *Metrics) proxyHeaderRefused(e proxyHeaderError) {
	if m != nil {
		m.proxyHeaders.WithLabelValues(proxyHeaderRefusals[e]).Inc()
	}
}

// watchPenalties adds a server's penalty table to gitssh_ssh_penalised_sources.
func (m *Metrics) watchPenalties(b *penaltyBox) {
	if m != nil && b != nil {
		m.penalised.mu.Lock()
		m.penalised.boxes = append(m.penalised.boxes, b)
		m.penalised.mu.Unlock()
	}
}

// penalisedSources is a gauge read from the penalty tables at scrape time:
// a block ends by itself, with no event to count.
type penalisedSources struct {
	desc  *prometheus.Desc
	mu    sync.Mutex
	boxes []*penaltyBox
}

func (p *penalisedSources) Describe(ch chan<- *prometheus.Desc) { ch <- p.desc }

func (p *penalisedSources) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	n := 0
	for _, b := range p.boxes {
		n += b.refusing()
	}
	p.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(p.desc, prometheus.GaugeValue, float64(n))
}

func (m *Metrics) handshakeDone() {
	if m != nil {
		m.handshakes.Dec()
	}
}

func (m *Metrics) closed(outcome string) {
	if m != nil {
		m.connsInFlight.Dec()
		m.connsClosed.WithLabelValues(outcome).Inc()
	}
}

// handshakeOutcome is how a connection whose handshake failed with err ends.
func handshakeOutcome(err error) string {
	var authErr *ssh.ServerAuthError
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return outcomeTimeout
	case errors.As(err, &authErr):
		return outcomeRefused
	}
	return outcomeHandshakeFailed
}

func (m *Metrics) sessionStarted() {
	if m != nil {
		m.sessions.Inc()
	}
}

func (m *Metrics) sessionEnded() {
	if m != nil {
		m.sessions.Dec()
	}
}

// authAttempt counts one attempt, as ssh.ServerConfig.AuthLogCallback sees
// it. "none", which clients send first to learn the methods, is no attempt.
// A publickey offer that would be accepted is counted only once signed for,
// or as offered_without_proof at the end of the handshake.
func (m *Metrics) authAttempt(method string, err error) {
	if m == nil || method == "none" {
		return
	}
	result := authAccepted
	switch {
	case method != "publickey":
		if method != "password" && method != "keyboard-interactive" {
			method = "other"
		}
		result = authMethodNotAllowed
	case err == nil:
	case errors.Is(err, errWrongUser):
		result = authWrongUser
	case errors.Is(err, errUnknownKey):
		result = authUnknownKey
	case errors.Is(err, errKeyRevoked):
		result = authRevoked
	case errors.As(err, new(certificateRefusal)):
		result = authCertificateRefused
	default:
		// CheckClientKey's refusals, and x/crypto's for signature algorithms
		// we do not accept (ssh-rsa with SHA-1) or keys it cannot parse.
		result = authWeakKey
	}
	m.authAttempts.WithLabelValues(method, result).Inc()
}

func (m *Metrics) offeredWithoutProof() {
	if m != nil {
		m.authAttempts.WithLabelValues("publickey", authOfferedWithoutProof).Inc()
	}
}

func (m *Metrics) requestRefused(typ string) {
	if m != nil {
		m.refused.WithLabelValues(typ).Inc()
	}
}

// gitRun is what the metrics learn of one git command.
type gitRun struct {
	result   string
	ran      bool // git was started: duration and bytes are known
	duration time.Duration
	in, out  int64
}

func (m *Metrics) gitCommand(service string, run gitRun) {
	if m == nil {
		return
	}
	service = serviceLabel(service)
	m.gitCommands.WithLabelValues(service, run.result).Inc()
	if run.ran {
		m.gitDuration.WithLabelValues(service).Observe(run.duration.Seconds())
		m.gitReceived.WithLabelValues(service).Add(float64(run.in))
		m.gitSent.WithLabelValues(service).Add(float64(run.out))
	}
}

// uploadWaiting: a clone starts (+1) or stops (-1) waiting for a turn.
func (m *Metrics) uploadWaiting(delta float64) {
	if m != nil {
		m.uploadsWaiting.Add(delta)
	}
}

func (m *Metrics) uploadQueueTimeout() {
	if m != nil {
		m.uploadTimeouts.Inc()
	}
}

func (m *Metrics) pushTooLarge() {
	if m != nil {
		m.pushesTooLarge.Inc()
	}
}

// sessionRequestRefusal is the label of a refused session request type, ""
// for those not worth counting: env (OpenSSH sends LANG and LC_* on every
// connection), window-change, signal and the like.
func sessionRequestRefusal(reqType string) string {
	switch reqType {
	case "subsystem":
		return requestSubsystem
	case "x11-req":
		return requestX11
	case "auth-agent-req@openssh.com":
		return requestAgent
	}
	return ""
}

// channelRefusal is the label of a refused channel type.
func channelRefusal(chanType string) string {
	switch chanType {
	case "direct-tcpip", "direct-streamlocal@openssh.com", "forwarded-tcpip":
		return requestPortForwarding
	}
	return requestOtherChannel
}

// globalRequestRefusal is the label of a refused global request, "" for
// those that are no refusal worth counting (keepalives, no-more-sessions).
func globalRequestRefusal(reqType string) string {
	switch reqType {
	case "tcpip-forward", "cancel-tcpip-forward", "streamlocal-forward@openssh.com", "cancel-streamlocal-forward@openssh.com":
		return requestPortForwarding
	}
	return ""
}
