package app

import (
	"flag"
	"strings"

	"github.com/gitssh-dev/gitssh/controllers"
	"github.com/gitssh-dev/gitssh/internal/housekeeping"
	"github.com/gitssh-dev/gitssh/internal/packcache"
	"github.com/gitssh-dev/gitssh/internal/timerslack"
	"github.com/gitssh-dev/gitssh/internal/usage"
	"github.com/gitssh-dev/gitssh/sshserver"
)

// BindFlags defines gitssh's command-line flags on fs, each setting a field of o to its
// default. main.go binds them to the command line; make dev to DEV_ARGS, so that every
// flag can be tried there too.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Namespace, "namespace", PodNamespace(), "The namespace to watch for SSHPublicKey and GitProject objects, and where the host key Secret lives. Default: the pod's own namespace.")
	fs.StringVar(&o.SSHAddr, "ssh-addr", ":2222", "The address the SSH server listens on.")
	fs.StringVar(&o.SSH.User, "ssh-user", sshserver.DefaultUser, "The only SSH user name accepted, as in ssh://git@HOST/OWNER/PROJECT.git.")
	fs.StringVar(&o.PublicHost, "ssh-public-host", "", "The host name clients use, shown in clone URLs and known_hosts. Default: the address of the LoadBalancer Service --service-name.")
	fs.IntVar(&o.PublicPort, "ssh-public-port", 0, "The port clients use. Default: 22 with --ssh-public-host, else the Service's port.")
	fs.StringVar(&o.ServiceName, "service-name", "gitssh", "The LoadBalancer Service in front of the SSH pods, read for the public address when --ssh-public-host is not set.")
	fs.StringVar(&o.RepoRoot, "repo-root", "/var/lib/gitssh/repositories", "The directory holding the bare repositories, OWNER/PROJECT.git.")
	fs.StringVar(&o.HostKeySecret, "host-key-secret", "gitssh-host-keys", "The Secret holding the SSH host keys; generated once when missing, never overwritten.")
	fs.StringVar(&o.TrustedUserCAKeys, "trusted-user-ca-keys", "", "A ConfigMap in the namespace whose trusted_user_ca_keys lists the CAs (one OpenSSH public key per line) whose user certificates log in as the user their one principal names, and whose revoked_certificates lists revoked ones (serial:, id:, key:, hash: lines as in ssh-keygen -k); watched, so changes apply without a restart. Empty: certificates are refused.")
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8080", "The address the Prometheus metrics endpoint binds to; 0 turns it off.")
	fs.StringVar(&o.HealthProbeAddr, "health-probe-bind-address", ":8081", "The address the /healthz and /readyz probes bind to.")
	fs.StringVar(&o.PprofAddr, "pprof-bind-address", "", "An address to serve Go's profiles on (/debug/pprof/), e.g. 127.0.0.1:6060; unauthenticated, so keep it off the network. Empty: off.")
	fs.BoolVar(&o.LeaderElection, "leader-elect", true, "Elect one replica to write status and provision repositories; every replica serves SSH either way.")
	fs.StringVar(&o.LeaderElectionID, "leader-election-id", "gitssh-leader", "The name of the leader election Lease.")

	fs.DurationVar(&o.MaxKeyLifetime, "max-key-lifetime", 0, "The longest an SSHPublicKey logs in, from its creation, whatever its spec.expirationTime, e.g. 2160h for 90 days; checked at every login. 0: no maximum.")
	fs.DurationVar(&o.KeyExpiryWarning, "key-expiry-warning", controllers.DefaultKeyExpiryWarning, "How long before its expiration time a key's Ready reason turns ExpiringSoon, with a Warning event. Negative: no warning.")
	fs.DurationVar(&o.StaleKeyAfter, "stale-key-after", 0, "How long a key may go without a login before its Stale condition turns True, with a Warning event, e.g. 2160h for 90 days. 0: no Stale condition.")
	fs.DurationVar(&o.UsageFlushInterval, "usage-flush-interval", usage.DefaultFlushInterval, "How often, at most, one key's or project's last-used times are written to its status; also their granularity.")

	fs.DurationVar(&o.SSH.LoginGraceTime, "ssh-login-grace-time", sshserver.DefaultLoginGraceTime, "Time a client has to authenticate.")
	fs.IntVar(&o.SSH.MaxAuthTries, "ssh-max-auth-tries", sshserver.DefaultMaxAuthTries, "Authentication attempts per connection.")
	fs.TextVar(&o.SSH.MaxStartups, "ssh-max-startups", sshserver.DefaultMaxStartups, "Connections not authenticated yet, as OpenSSH's MaxStartups start:rate:full: past start a new one is dropped with probability rate%, rising to 100% at full. One number N is a hard cap (N:100:N).")
	fs.IntVar(&o.SSH.MaxStartupsPerSource, "ssh-max-startups-per-source", sshserver.DefaultMaxStartupsPerSource, "Connections not authenticated yet from one IPv4 address or IPv6 /64; more are closed at once. Negative turns it off.")
	fs.TextVar(&o.SSH.ProxyProtocol, "ssh-proxy-protocol", sshserver.DefaultProxyProtocol, "Read a PROXY protocol v1/v2 header, sent by a load balancer, for the client's real address: off, optional (honour one from --ssh-proxy-protocol-trusted-cidrs, accept connections without) or required (refuse connections without one).")
	fs.TextVar(&o.SSH.ProxyProtocolTrustedCIDRs, "ssh-proxy-protocol-trusted-cidrs", sshserver.CIDRs{}, "Comma-separated CIDRs of the load balancers (or nodes) allowed to send a PROXY protocol header; a header from any other address is refused. Needed unless --ssh-proxy-protocol=off.")
	fs.TextVar(&o.SSH.PerSourcePenalties, "ssh-per-source-penalties", sshserver.DefaultPenalties, "As OpenSSH's PerSourcePenalties: a connection that fails to log in adds authfail (a key or user was refused) or noauth (spoke SSH, tried nothing) to its source's penalty; at min the source is refused for that long, each later time twice as long up to max. off turns it off.")
	fs.TextVar(&o.SSH.PenaltyExemptCIDRs, "ssh-penalty-exempt-cidrs", sshserver.CIDRs{}, "Comma-separated CIDRs never penalised, e.g. CI runners, or the nodes when clients' addresses are not kept (externalTrafficPolicy Cluster without the PROXY protocol).")
	fs.IntVar(&o.SSH.PenaltyMaxSources, "ssh-penalty-max-sources", sshserver.DefaultPenaltyMaxSources, "Sources remembered for penalties; when full, the one penalised longest ago is forgotten.")
	fs.IntVar(&o.SSH.MaxConns, "ssh-max-conns", sshserver.DefaultMaxConns, "All connections; more are closed at once.")
	fs.IntVar(&o.SSH.MaxSessionsPerConn, "ssh-max-sessions-per-conn", sshserver.DefaultMaxSessionsPerConn, "Session channels per connection.")
	fs.DurationVar(&o.SSH.IdleTimeout, "ssh-idle-timeout", sshserver.DefaultIdleTimeout, "Close an authenticated connection with no open session after this long; negative turns it off.")
	fs.DurationVar(&o.SSH.KeepaliveInterval, "ssh-keepalive-interval", sshserver.DefaultKeepaliveInterval, "Interval of keepalive requests to the client; negative turns them off.")
	fs.IntVar(&o.SSH.KeepaliveCountMax, "ssh-keepalive-count-max", sshserver.DefaultKeepaliveCountMax, "Unanswered keepalives before the connection is cut.")
	fs.DurationVar(&o.SSH.MaxSessionDuration, "ssh-max-session-duration", 0, "Kill a git command running longer than this; 0 means no limit.")
	fs.DurationVar(&o.SSH.ShutdownGracePeriod, "ssh-shutdown-grace-period", sshserver.DefaultShutdownGracePeriod, "On shutdown, how long running git commands may take to finish.")
	fs.TextVar((*ByteSize)(&o.SSH.MaxPushSize), "ssh-max-push-size", ByteSize(sshserver.DefaultMaxPushSize), "The largest pack one push may send (git's receive.maxInputSize), as a quantity such as 500Mi or 2Gi; a larger push is refused and nothing of it is kept. 0: the default; negative: no limit.")
	fs.StringVar(&o.SSH.PackCache.Dir, "pack-cache-dir", "", "A directory of its own (an emptyDir) for the pack cache: identical fetches at the same time, such as CI jobs cloning one commit, are served from one git pack-objects run. Empty: no cache.")
	fs.TextVar((*ByteSize)(&o.SSH.PackCache.MaxBytes), "pack-cache-max-size", ByteSize(packcache.DefaultMaxBytes), "The most the pack cache keeps on disk, as a quantity such as 512Mi or 2Gi; the least recently used packs go first.")
	fs.DurationVar(&o.SSH.PackCache.TTL, "pack-cache-ttl", packcache.DefaultTTL, "How long a cached pack is served after it was made.")
	fs.TextVar((*StringList)(&o.SSH.Ciphers), "ssh-ciphers", StringList(sshserver.DefaultCiphers), "The ciphers offered to clients, comma-separated; the client picks the first of its own list that is offered. Supported: "+strings.Join(sshserver.SupportedCiphers, ", ")+".")
	fs.StringVar(&o.SSH.GitHooksDir, "ssh-git-hooks-dir", "", "An absolute path to a directory of git hooks (pre-receive, update, post-receive, ...) run for every repository; pushers must not be able to write it. Empty: no hooks run, not even those in a repository's hooks/.")

	fs.IntVar(&o.SSH.MaxUploadPacks, "ssh-max-upload-packs", 0, "Clones, fetches and archives (git upload-pack, upload-archive) running at once on this pod; more wait in line. With the pack cache, what is counted is the pack-objects runs of clones and fetches: those served from the cache never wait. 0: twice the CPUs of the pod (its CPU limit); negative: no limit.")
	fs.IntVar(&o.SSH.MaxUploadPacksPerRepo, "ssh-max-upload-packs-per-repo", 0, "Clones, fetches and archives of one repository running at once on this pod; more wait in line. 0: half of --ssh-max-upload-packs; negative: no limit.")
	fs.DurationVar(&o.SSH.UploadQueueTimeout, "ssh-upload-queue-timeout", sshserver.DefaultUploadQueueTimeout, "How long a clone or fetch waits in line for a turn before it is refused with a message saying the server is busy.")
	fs.IntVar(&o.SSH.PackThreads, "git-pack-threads", 0, "git's pack.threads for clones and housekeeping. 0: the pod's CPU limit (--cpu-limit), rounded down, at least 1.")
	fs.TextVar((*ByteSize)(&o.SSH.PackWindowMemory), "git-pack-window-memory", ByteSize(0), "git's pack.windowMemory (per thread), e.g. 64Mi. 0: half of --memory-limit shared among the pack-objects that may run at once and their threads (at least 8Mi); none without a memory limit.")
	fs.TextVar((*CPUs)(&o.CPULimit), "cpu-limit", CPUs(0), "The pod's CPU limit, e.g. 2 or 1500m (the chart sets it from the Downward API), for --git-pack-threads. 0: unknown.")
	fs.DurationVar(&o.TimerSlack, "timer-slack", timerslack.Default, "How late the kernel may wake gitssh's sleeping threads and fire its timers. Go's scheduler thread sleeps 20µs at a time on a busy server; a larger slack lets it wake less often (4ms: about a fifth less CPU in a fan-out of clones than the kernel's, with logins as fast). gitssh sets it by re-executing itself at start. 0: the kernel's (50µs).")
	fs.TextVar((*ByteSize)(&o.MemoryLimit), "memory-limit", ByteSize(0), "The pod's memory limit (the chart sets it from the Downward API), for --git-pack-window-memory and Go's own soft memory limit, half of it (an explicit GOMEMLIMIT environment variable wins). 0: unknown.")

	fs.BoolVar(&o.Housekeeping.Disabled, "housekeeping-disabled", false, "Turn off housekeeping. Repositories are then never packed or pruned: every push stays a pack of its own.")
	fs.DurationVar(&o.Housekeeping.Interval, "housekeeping-interval", controllers.DefaultHousekeepingInterval, "A full housekeeping run on each repository at least this often (repack into one pack, prune what has been unreachable longer than --housekeeping-prune-grace).")
	fs.DurationVar(&o.Housekeeping.PushDelay, "housekeeping-push-delay", controllers.DefaultHousekeepingPushDelay, "After pushes, an incremental housekeeping run at most this often per repository.")
	fs.DurationVar(&o.Housekeeping.Timeout, "housekeeping-timeout", controllers.DefaultHousekeepingTimeout, "Stop a housekeeping run that takes longer.")
	fs.DurationVar(&o.Housekeeping.PruneGrace, "housekeeping-prune-grace", housekeeping.DefaultPruneGrace, "Delete unreachable objects only once they are this old; protects pushes running at the same time.")
	fs.IntVar(&o.Housekeeping.Concurrency, "housekeeping-concurrency", controllers.DefaultHousekeepingConcurrency, "Housekeeping runs at once on the leader, each on a different repository.")
}
