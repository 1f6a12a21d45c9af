// Package app assembles one gitssh process: the controller-runtime manager with the
// feeders and provisioners, and the SSH server they feed. main.go parses flags into
// Options and calls Run; the integration tests call Run the same way.
package app

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	goruntime "runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/controllers"
	"github.com/gitssh-dev/gitssh/internal/authorizer"
	"github.com/gitssh-dev/gitssh/internal/housekeeping"
	"github.com/gitssh-dev/gitssh/internal/repostore"
	"github.com/gitssh-dev/gitssh/internal/timerslack"
	"github.com/gitssh-dev/gitssh/internal/usage"
	"github.com/gitssh-dev/gitssh/sshserver"
)

// The leader election Lease is named by --leader-election-id, so its rules are written by
// hand next to the generated ones (config/rbac/named_rules.yaml, the chart's rbac.yaml).
// Leader election still reports its transitions as core/v1 events.
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// Options is everything one gitssh process is configured with.
type Options struct {
	// Namespace is the one namespace watched, and where the host key Secret lives.
	Namespace string

	// SSHAddr is where the SSH server listens, e.g. ":2222". Listener, when set, is used instead.
	SSHAddr  string
	Listener net.Listener
	// SSH holds the server's user name and limits.
	SSH sshserver.Config

	// PublicHost and PublicPort are what clone URLs and known_hosts show. With PublicHost
	// empty they come from the LoadBalancer Service named ServiceName.
	PublicHost  string
	PublicPort  int
	ServiceName string

	// UsageFlushInterval is how often, at most, one object's usage times are written, and
	// their granularity. Default 1 minute.
	UsageFlushInterval time.Duration

	// MaxKeyLifetime ends every SSHPublicKey that long after its creation at the latest,
	// whatever its spec.expirationTime; 0: no maximum.
	MaxKeyLifetime time.Duration
	// KeyExpiryWarning is how long before its expiration time a key turns ExpiringSoon,
	// with a Warning event. 0: 7 days; negative: no warning.
	KeyExpiryWarning time.Duration
	// StaleKeyAfter is how long a key may go without a login before its Stale condition
	// turns True; 0: no Stale condition.
	StaleKeyAfter time.Duration

	// RepoRoot holds the bare repositories, <RepoRoot>/<owner>/<project>.git.
	RepoRoot string
	// HostKeySecret names the Secret with the SSH host keys, generated once when missing.
	HostKeySecret string
	// TrustedUserCAKeys names the ConfigMap listing the CAs whose user certificates log in,
	// and the certificates revoked. Empty: certificates are refused.
	TrustedUserCAKeys string

	MetricsAddr     string
	HealthProbeAddr string
	// PprofAddr serves net/http/pprof when set; "" or "0": off.
	PprofAddr        string
	LeaderElection   bool
	LeaderElectionID string

	// Housekeeping configures the leader's housekeeping runs; Disabled turns them off.
	Housekeeping HousekeepingOptions

	// CPULimit (cores) and MemoryLimit (bytes) are the pod's resource limits, from the
	// Downward API; they bound git's pack.threads and pack.windowMemory
	// (sshserver.PackSettings) unless SSH.PackThreads and SSH.PackWindowMemory are set,
	// and MemoryLimit sets Go's memory limit unless GOMEMLIMIT does (goMemoryLimit).
	// 0: unknown (threads from GOMAXPROCS, no memory bound).
	CPULimit    float64
	MemoryLimit int64

	// TimerSlack is the process's timer slack, which main sets before anything
	// else (timerslack.Ensure); Run only logs it.
	TimerSlack time.Duration

	// SkipControllerNameValidation allows several managers in one process (tests).
	SkipControllerNameValidation bool
}

// HousekeepingOptions configure controllers.HousekeepingReconciler; zero fields take its
// defaults.
type HousekeepingOptions struct {
	Disabled    bool
	Interval    time.Duration
	PushDelay   time.Duration
	Timeout     time.Duration
	PruneGrace  time.Duration
	Concurrency int
}

// Run runs gitssh until ctx is cancelled: it loads (or creates) the host keys, starts the
// manager and the SSH server, and on cancel lets running git commands finish within the
// server's shutdown grace period.
func Run(ctx context.Context, restConfig *rest.Config, opts Options, log logr.Logger) error {
	if opts.Namespace == "" {
		return errors.New("no namespace to watch: set --namespace (in a pod it defaults to the pod's own)")
	}
	// The first sync writes a status for every object: at controller-runtime's default
	// client rate (20 QPS, burst 30) 10,000 keys and 2,000 projects took over 3 minutes,
	// at 200 QPS 80 s (BenchmarkScale). Afterwards writes are rare (only on change, usage
	// coalesced), and the API server's priority and fairness still protects it from us.
	restConfig = rest.CopyConfig(restConfig)
	restConfig.QPS, restConfig.Burst = 200, 400

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := gitsshv1alpha1.AddToScheme(scheme); err != nil {
		return err
	}

	// The host keys come first: a server without its identity must not start, and a
	// Secret that does not parse stops start-up here with a message naming the bad key.
	direct, err := client.New(restConfig, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	secret := types.NamespacedName{Namespace: opts.Namespace, Name: opts.HostKeySecret}
	hostKeys, err := controllers.LoadOrCreateHostKeys(ctx, direct, secret, log.WithName("hostkeys"))
	if err != nil {
		return err
	}

	grace := opts.SSH.ShutdownGracePeriod
	if grace == 0 {
		grace = sshserver.DefaultShutdownGracePeriod
	}
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                  scheme,
		Logger:                  log,
		Metrics:                 metricsserver.Options{BindAddress: opts.MetricsAddr},
		HealthProbeBindAddress:  opts.HealthProbeAddr,
		PprofBindAddress:        opts.PprofAddr,
		LeaderElection:          opts.LeaderElection,
		LeaderElectionID:        opts.LeaderElectionID,
		LeaderElectionNamespace: opts.Namespace,
		// A leader that stops (a rollout, a deleted pod) hands the Lease over at once instead
		// of leaving the others to wait out its 15 s. Safe because Run returns, and the
		// process exits, as soon as the manager has stopped: the Lease is released only after
		// every leader-only runnable has.
		LeaderElectionReleaseOnCancel: true,
		// Running pushes get the server's grace period, plus a little to flush.
		GracefulShutdownTimeout: ptr.To(grace + 5*time.Second),
		Controller: config.Controller{
			SkipNameValidation: ptr.To(opts.SkipControllerNameValidation),
			// Status writes are round trips to the API server; a few in flight keep a first
			// sync of thousands of objects short. One object is never reconciled twice at once.
			MaxConcurrentReconciles: 4,
		},
		Cache: cache.Options{
			DefaultNamespaces: map[string]cache.Config{opts.Namespace: {}},
			// Every replica caches every key and project; without their managedFields and
			// last-applied annotations they take half the memory (see stripForCache).
			DefaultTransform: stripForCache,
			// Of Secrets and ConfigMaps, only the host key ones are watched. The Role allows
			// no other: it lists and watches them by name, which the API server allows only
			// with this metadata.name field selector.
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Secret{}:    {Field: fields.OneTermEqualSelector("metadata.name", secret.Name)},
				&corev1.ConfigMap{}: {Field: fields.OneTermEqualSelector("metadata.name", controllers.KnownHostsConfigMapName(secret.Name))},
			},
		},
	})
	if err != nil {
		return fmt.Errorf("creating the controller manager: %w", err)
	}

	trustedCAs, err := trustedUserCAs(restConfig, mgr, &opts)
	if err != nil {
		return err
	}

	opts.SSH.PackThreads, opts.SSH.PackWindowMemory = packSettings(opts)
	goMemLimit := setGoMemoryLimit(opts.MemoryLimit)
	authz := authorizer.New()
	store := repostore.Store{Root: opts.RepoRoot}
	usageRecorder := &usage.Recorder{
		Client: mgr.GetClient(), Reader: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Events: mgr.GetEventRecorder("gitssh"), Interval: opts.UsageFlushInterval, Log: log.WithName("usage"),
	}
	if err := mgr.Add(usageRecorder); err != nil {
		return err
	}
	// On controller-runtime's registry, so they are served with its own metrics.
	opts.SSH.Metrics = sshserver.NewMetrics(ctrlmetrics.Registry)
	if opts.SSH.PackCache.Dir != "" && opts.SSH.PackCache.Registerer == nil {
		opts.SSH.PackCache.Registerer = ctrlmetrics.Registry
	}
	server, err := sshserver.New(opts.SSH, hostKeys, authz, usageRecorder, log.WithName("ssh"))
	if err != nil {
		return err
	}
	endpoint := &controllers.PublicEndpoint{
		Host:    opts.PublicHost,
		Port:    opts.PublicPort,
		Service: types.NamespacedName{Namespace: opts.Namespace, Name: opts.ServiceName},
		Reader:  mgr.GetAPIReader(),
	}

	if err := controllers.SetupIndexes(ctx, mgr); err != nil {
		return err
	}
	keyFeeder := &controllers.SSHPublicKeyFeeder{Authorizer: authz, MaxKeyLifetime: opts.MaxKeyLifetime}
	projectFeeder := &controllers.GitProjectFeeder{Authorizer: authz, Store: store}
	loaders := []loader{keyFeeder, projectFeeder}
	if trustedCAs != nil {
		if err := trustedCAs.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("setting up controller trusted-user-cas: %w", err)
		}
		loaders = append(loaders, trustedCAs)
	}
	for name, setup := range map[string]interface{ SetupWithManager(ctrl.Manager) error }{
		"sshpublickey-feeder": keyFeeder,
		"gitproject-feeder":   projectFeeder,
		"sshpublickey": &controllers.SSHPublicKeyReconciler{
			Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("gitssh"),
			MaxKeyLifetime: opts.MaxKeyLifetime, ExpiryWarning: opts.KeyExpiryWarning, StaleAfter: opts.StaleKeyAfter,
		},
		"gitproject": &controllers.GitProjectReconciler{
			Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("gitssh"), Store: store,
			SSHUser: sshUser(opts.SSH), Endpoint: endpoint, Serving: server.Serving,
		},
		"known-hosts": &controllers.KnownHostsReconciler{
			Client: mgr.GetClient(), Secret: secret,
			Endpoint: func() (string, int, bool) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				return endpoint.Resolve(ctx)
			},
		},
	} {
		if err := setup.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("setting up controller %s: %w", name, err)
		}
	}
	if !opts.Housekeeping.Disabled {
		hk := &controllers.HousekeepingReconciler{
			Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("gitssh"),
			Options: housekeeping.Options{
				PruneGrace: opts.Housekeeping.PruneGrace, GitBinary: opts.SSH.GitBinary,
				PackThreads: opts.SSH.PackThreads, PackWindowMemory: opts.SSH.PackWindowMemory,
			},
			Interval: opts.Housekeeping.Interval, PushDelay: opts.Housekeeping.PushDelay,
			Timeout: opts.Housekeeping.Timeout, Concurrency: opts.Housekeeping.Concurrency,
		}
		if err := hk.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("setting up controller housekeeping: %w", err)
		}
	}

	if err := mgr.Add(&sshRunnable{
		server: server, addr: opts.SSHAddr, listener: opts.Listener, grace: grace,
		cache: mgr.GetCache(), loaders: loaders, log: log.WithName("ssh"),
		// The known-hosts controller's: the host key Secret and its ConfigMap, by name.
		informers: []client.Object{&corev1.Secret{}, &corev1.ConfigMap{}},
		// Pushes that finished during the grace period are written too.
		afterShutdown: func(ctx context.Context) { usageRecorder.Flush(ctx) },
	}); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	// Ready once the host keys are loaded (above), the caches have synced (the leader-only
	// known-hosts controller's too) and the authorizer is filled (the SSH runnable waits
	// for both) and the listener accepts.
	if err := mgr.AddReadyzCheck("ssh", func(*http.Request) error {
		if !server.Serving() {
			return errors.New("the SSH server is not accepting connections yet")
		}
		return nil
	}); err != nil {
		return err
	}
	log.Info("Starting gitssh", "namespace", opts.Namespace, "sshAddr", opts.SSHAddr, "repoRoot", opts.RepoRoot,
		"hostKeySecret", secret.String(), "trustedUserCAKeys", opts.TrustedUserCAKeys, "leaderElection", opts.LeaderElection, "goMemoryLimit", goMemLimit, "timerSlack", currentTimerSlack())
	return mgr.Start(ctx)
}

// trustedUserCAs sets up what keeps opts.SSH.TrustedUserCAs equal to the ConfigMap
// opts.TrustedUserCAKeys, if one is named: a cache of its own that watches that ConfigMap
// alone, by name, as the Role allows (a field selector names one object, and the manager's
// cache already watches the known-hosts ConfigMap).
func trustedUserCAs(restConfig *rest.Config, mgr ctrl.Manager, opts *Options) (*controllers.TrustedUserCAReconciler, error) {
	if opts.TrustedUserCAKeys == "" {
		return nil, nil
	}
	c, err := cache.New(restConfig, cache.Options{
		Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(),
		DefaultNamespaces: map[string]cache.Config{opts.Namespace: {}},
		ByObject: map[client.Object]cache.ByObject{
			&corev1.ConfigMap{}: {Field: fields.OneTermEqualSelector("metadata.name", opts.TrustedUserCAKeys)},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("creating the trusted user CA cache: %w", err)
	}
	// Started with the manager's caches, on every replica (a bare cache would be taken for
	// a leader-only runnable).
	if err := mgr.Add(replicaCache{c}); err != nil {
		return nil, err
	}
	opts.SSH.TrustedUserCAs = &sshserver.TrustedUserCAs{}
	return &controllers.TrustedUserCAReconciler{
		Cache:     c,
		ConfigMap: types.NamespacedName{Namespace: opts.Namespace, Name: opts.TrustedUserCAKeys},
		CAs:       opts.SSH.TrustedUserCAs,
		Events:    mgr.GetEventRecorder("gitssh"),
	}, nil
}

// replicaCache is a cache the manager starts with its own caches, on every replica.
type replicaCache struct{ cache.Cache }

func (c replicaCache) GetCache() cache.Cache { return c.Cache }

// packSettings returns git's pack.threads and pack.windowMemory: the flags when set, else
// derived from the pod's limits for as many pack-objects as may run at once (the SSH
// server's upload slots and one housekeeping run).
func packSettings(opts Options) (threads int, windowMemory int64) {
	packs := opts.SSH.MaxUploadPacks
	if packs <= 0 {
		packs = 2 * goruntime.GOMAXPROCS(0) // sshserver's default
	}
	threads, windowMemory = sshserver.PackSettings(opts.CPULimit, opts.MemoryLimit, packs+1)
	if opts.SSH.PackThreads != 0 {
		threads = opts.SSH.PackThreads
	}
	if opts.SSH.PackWindowMemory != 0 {
		windowMemory = opts.SSH.PackWindowMemory
	}
	return threads, windowMemory
}

// setGoMemoryLimit sets the Go heap's soft limit to goMemoryLimit(podLimit), unless GOMEMLIMIT
// is set (Go has applied it itself) or the pod's limit is unknown, and returns the limit in
// effect, for the log.
func setGoMemoryLimit(podLimit int64) string {
	limit := debug.SetMemoryLimit(-1)
	if os.Getenv("GOMEMLIMIT") == "" && podLimit > 0 {
		limit = goMemoryLimit(podLimit)
		debug.SetMemoryLimit(limit)
	}
	if limit == math.MaxInt64 {
		return "none"
	}
	return resource.NewQuantity(limit, resource.BinarySI).String()
}

// goMemoryLimit is the share of the pod's memory limit that Go's collector keeps the process
// under: git's processes count against the same limit, and PackSettings already gives half
// of it to their delta windows. A soft limit reserves nothing; a lower share would make the
// collector run without pause in small pods (the live heap is about 40 MiB with 10,000 keys).
func goMemoryLimit(podLimit int64) int64 { return podLimit / 2 }

func sshUser(cfg sshserver.Config) string {
	if cfg.User == "" {
		return sshserver.DefaultUser
	}
	return cfg.User
}

// PodNamespace is the namespace this pod runs in, or "" outside a cluster.
func PodNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	data, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

// currentTimerSlack is the process's timer slack for the start line, or what
// went wrong reading it.
func currentTimerSlack() string {
	slack, err := timerslack.Current()
	if err != nil {
		return err.Error()
	}
	return slack.String()
}
