/*
Copyright 2026 The gitssh Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// Command gitssh is a Kubernetes operator whose pods are also a git-over-SSH server.
// It only wires flags to internal/app.
package main

import (
	"flag"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/gitssh-dev/gitssh/internal/app"
	"github.com/gitssh-dev/gitssh/internal/usage"
	"github.com/gitssh-dev/gitssh/sshserver"
)

func main() {
	var opts app.Options
	flag.StringVar(&opts.Namespace, "namespace", app.PodNamespace(), "The namespace to watch for SSHPublicKey and GitProject objects, and where the host key Secret lives. Default: the pod's own namespace.")
	flag.StringVar(&opts.SSHAddr, "ssh-addr", ":2222", "The address the SSH server listens on.")
	flag.StringVar(&opts.SSH.User, "ssh-user", sshserver.DefaultUser, "The only SSH user name accepted, as in ssh://git@HOST/OWNER/PROJECT.git.")
	flag.StringVar(&opts.PublicHost, "ssh-public-host", "", "The host name clients use, shown in clone URLs and known_hosts. Default: the address of the LoadBalancer Service --service-name.")
	flag.IntVar(&opts.PublicPort, "ssh-public-port", 0, "The port clients use. Default: 22 with --ssh-public-host, else the Service's port.")
	flag.StringVar(&opts.ServiceName, "service-name", "gitssh", "The LoadBalancer Service in front of the SSH pods, read for the public address when --ssh-public-host is not set.")
	flag.StringVar(&opts.RepoRoot, "repo-root", "/var/lib/gitssh/repositories", "The directory holding the bare repositories, OWNER/PROJECT.git.")
	flag.StringVar(&opts.HostKeySecret, "host-key-secret", "gitssh-host-keys", "The Secret holding the SSH host keys; generated once when missing, never overwritten.")
	flag.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":8080", "The address the Prometheus metrics endpoint binds to; 0 turns it off.")
	flag.StringVar(&opts.HealthProbeAddr, "health-probe-bind-address", ":8081", "The address the /healthz and /readyz probes bind to.")
	flag.BoolVar(&opts.LeaderElection, "leader-elect", true, "Elect one replica to write status and provision repositories; every replica serves SSH either way.")
	flag.StringVar(&opts.LeaderElectionID, "leader-election-id", "gitssh-leader", "The name of the leader election Lease.")

	flag.DurationVar(&opts.UsageFlushInterval, "usage-flush-interval", usage.DefaultFlushInterval, "How often, at most, one key's or project's last-used times are written to its status; also their granularity.")

	flag.DurationVar(&opts.SSH.LoginGraceTime, "ssh-login-grace-time", sshserver.DefaultLoginGraceTime, "Time a client has to authenticate.")
	flag.IntVar(&opts.SSH.MaxAuthTries, "ssh-max-auth-tries", sshserver.DefaultMaxAuthTries, "Authentication attempts per connection.")
	flag.TextVar(&opts.SSH.MaxStartups, "ssh-max-startups", sshserver.DefaultMaxStartups, "Connections not authenticated yet, as OpenSSH's MaxStartups start:rate:full: past start a new one is dropped with probability rate%, rising to 100% at full. One number N is a hard cap (N:100:N).")
	flag.IntVar(&opts.SSH.MaxStartupsPerSource, "ssh-max-startups-per-source", sshserver.DefaultMaxStartupsPerSource, "Connections not authenticated yet from one IPv4 address or IPv6 /64; more are closed at once. Negative turns it off.")
	flag.IntVar(&opts.SSH.MaxConns, "ssh-max-conns", sshserver.DefaultMaxConns, "All connections; more are closed at once.")
	flag.IntVar(&opts.SSH.MaxSessionsPerConn, "ssh-max-sessions-per-conn", sshserver.DefaultMaxSessionsPerConn, "Session channels per connection.")
	flag.DurationVar(&opts.SSH.IdleTimeout, "ssh-idle-timeout", sshserver.DefaultIdleTimeout, "Close an authenticated connection with no open session after this long; negative turns it off.")
	flag.DurationVar(&opts.SSH.KeepaliveInterval, "ssh-keepalive-interval", sshserver.DefaultKeepaliveInterval, "Interval of keepalive requests to the client; negative turns them off.")
	flag.IntVar(&opts.SSH.KeepaliveCountMax, "ssh-keepalive-count-max", sshserver.DefaultKeepaliveCountMax, "Unanswered keepalives before the connection is cut.")
	flag.DurationVar(&opts.SSH.MaxSessionDuration, "ssh-max-session-duration", 0, "Kill a git command running longer than this; 0 means no limit.")
	flag.DurationVar(&opts.SSH.ShutdownGracePeriod, "ssh-shutdown-grace-period", sshserver.DefaultShutdownGracePeriod, "On shutdown, how long running git commands may take to finish.")
	flag.TextVar((*app.ByteSize)(&opts.SSH.MaxPushSize), "ssh-max-push-size", app.ByteSize(sshserver.DefaultMaxPushSize), "The largest pack one push may send (git's receive.maxInputSize), as a quantity such as 500Mi or 2Gi; a larger push is refused and nothing of it is kept. 0: the default; negative: no limit.")
	flag.StringVar(&opts.SSH.GitHooksDir, "ssh-git-hooks-dir", "", "An absolute path to a directory of git hooks (pre-receive, update, post-receive, ...) run for every repository; pushers must not be able to write it. Empty: no hooks run, not even those in a repository's hooks/.")

	zapOptions := zap.Options{}
	zapOptions.BindFlags(flag.CommandLine)
	flag.Parse()

	log := zap.New(zap.UseFlagOptions(&zapOptions))
	ctrl.SetLogger(log)

	if err := app.Run(ctrl.SetupSignalHandler(), ctrl.GetConfigOrDie(), opts, log); err != nil {
		log.Error(err, "gitssh stopped")
		os.Exit(1)
	}
}
