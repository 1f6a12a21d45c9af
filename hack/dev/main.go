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

// Command dev is `make dev`: it runs gitssh on a local control plane (etcd and
// kube-apiserver built by hack/setup-envtest.sh, started through envtest) with a demo
// key and project, checks that a clone works, and prints how to use it.
//
// Everything it keeps lives in one directory, .dev/ in the source tree or
// $GITSSH_DEV_DIR: etcd's data, the host keys, the repositories, the demo key, the
// kubeconfig and the control plane's logs. A second run reuses all of it, so the host
// key, the repositories and the demo key stay the same. SIGINT or SIGTERM stops the
// operator, then kube-apiserver and etcd; a second signal skips the operator's grace
// period.
//
// DEV_ARGS holds extra gitssh flags, split on spaces, e.g.
// DEV_ARGS="--ssh-max-auth-tries=2 --zap-log-level=debug"; make dev keeps the SSH address
// (DEV_SSH_PORT) and the repositories directory its own.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/controllers"
	"github.com/gitssh-dev/gitssh/internal/app"
	"github.com/gitssh-dev/gitssh/internal/packhook"
	"github.com/gitssh-dev/gitssh/internal/testenv"
	"github.com/gitssh-dev/gitssh/internal/timerslack"
)

const (
	namespace     = "default"
	hostKeySecret = "gitssh-host-keys"
	demoUser      = "demo"
	demoProject   = "hello"
	readyLine     = "gitssh dev: ready"

	// setupTimeout bounds everything from a running control plane to a verified clone.
	setupTimeout = 2 * time.Minute
	// stopTimeout bounds the operator's shutdown before the control plane is stopped anyway.
	stopTimeout = 45 * time.Second
)

func main() {
	// With --pack-cache-dir in DEV_ARGS, git runs this binary as its
	// pack-objects hook, as it runs gitssh's.
	if packhook.Is() {
		os.Exit(packhook.Run())
	}
	opts, zapOpts, err := gitsshOptions(os.Getenv("DEV_ARGS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "gitssh dev:", err)
		os.Exit(2)
	}
	log := zap.New(zap.UseFlagOptions(&zapOpts), zap.WriteTo(os.Stderr))
	ctrl.SetLogger(log)
	// As gitssh does, before the control plane starts: on success this re-executes.
	if err := timerslack.Ensure(opts.TimerSlack); err != nil {
		log.Error(err, "Kept the kernel's timer slack", "timerSlack", opts.TimerSlack)
	}
	if err := run(log, opts); err != nil {
		fmt.Fprintln(os.Stderr, "gitssh dev:", err)
		os.Exit(1)
	}
}

// gitsshOptions returns gitssh's options for make dev: gitssh's defaults, then make
// dev's, then the flags in devArgs (split on spaces), gitssh's own and its --zap-* ones.
func gitsshOptions(devArgs string) (app.Options, zap.Options, error) {
	var opts app.Options
	fs := flag.NewFlagSet("DEV_ARGS", flag.ContinueOnError)
	opts.BindFlags(fs)
	zapOpts := zap.Options{Development: true}
	zapOpts.BindFlags(fs)

	opts.Namespace = namespace
	opts.ServiceName = "gitssh"
	opts.HostKeySecret = hostKeySecret
	// Short, so that the demo shows LAST USED a few seconds after a clone.
	opts.UsageFlushInterval = 5 * time.Second
	// Any free port (see serveMetrics); no health probes, as nothing probes make dev.
	opts.MetricsAddr = "127.0.0.1:0"
	opts.HealthProbeAddr = "0"
	opts.LeaderElection = false

	if err := fs.Parse(strings.Fields(devArgs)); err != nil {
		return opts, zapOpts, fmt.Errorf("DEV_ARGS=%q: %w (gitssh's flags are listed above)", devArgs, err)
	}
	if fs.NArg() > 0 {
		return opts, zapOpts, fmt.Errorf("DEV_ARGS=%q: %q is not a flag; write flags as --name=value", devArgs, fs.Arg(0))
	}
	return opts, zapOpts, nil
}

// metricsURL is where the metrics endpoint bound to addr answers, "" when it is off.
func metricsURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "0" {
		return ""
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/metrics"
}

// serveMetrics returns the metrics endpoint's URL ("" when it is off). On port 0 make dev
// binds it and serves gitssh's metrics there itself, turning the manager's off: the
// manager would bind any free port but not say which, and a port picked free beforehand
// may be taken by another process before the manager binds it.
func serveMetrics(opts *app.Options) (string, error) {
	if _, port, err := net.SplitHostPort(opts.MetricsAddr); err != nil || port != "0" {
		return metricsURL(opts.MetricsAddr), nil
	}
	l, err := net.Listen("tcp", opts.MetricsAddr)
	if err != nil {
		return "", fmt.Errorf("metrics endpoint: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(ctrlmetrics.Registry, promhttp.HandlerOpts{}))
	go func() { _ = http.Serve(l, mux) }() // until make dev exits
	opts.MetricsAddr = "0"
	return metricsURL(l.Addr().String()), nil
}

// paths are the files and directories of one dev environment.
type paths struct {
	root, dir                                  string // the source tree, and .dev in it (or $GITSSH_DEV_DIR)
	assets                                     string // kube-apiserver, etcd, kubectl
	etcd, hostKeys, repos, logs, pidFile       string
	kubeconfig, demoKey, knownHosts, kubectlIn string
}

func run(log logr.Logger, opts app.Options) error {
	// The first signal stops everything in order; a second one cuts the operator's
	// grace period short. The control plane is stopped either way.
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hurry := make(chan struct{})
	go func() {
		s := <-signals
		log.Info("Received a signal, stopping gitssh, then kube-apiserver and etcd", "signal", s.String())
		cancel()
		<-signals
		log.Info("Received a second signal, stopping the control plane now")
		close(hurry)
	}()

	p, err := resolvePaths()
	if err != nil {
		return err
	}
	port := 2222
	if v := os.Getenv("DEV_SSH_PORT"); v != "" {
		if port, err = strconv.Atoi(v); err != nil || port < 1 || port > 65535 {
			return fmt.Errorf("DEV_SSH_PORT=%q is not a port number", v)
		}
	}
	// Listen before anything starts, so that a busy port fails at once and says what to do.
	sshAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	listener, err := net.Listen("tcp", sshAddr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s for SSH (%w); set DEV_SSH_PORT to a free port", sshAddr, err)
	}
	defer func() { _ = listener.Close() }()
	metrics, err := serveMetrics(&opts)
	if err != nil {
		return err
	}

	if err := ensureDemoKey(ctx, p.demoKey, log); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return nil
	}

	stopLeftovers(p.pidFile, log)
	env, err := startControlPlane(p, log)
	if err != nil {
		return err
	}
	writePIDFile(p.pidFile, log)
	defer func() {
		log.Info("Stopping kube-apiserver and etcd")
		if err := env.Stop(); err != nil {
			log.Error(err, "Stopping the control plane failed")
			return
		}
		_ = os.Remove(p.pidFile)
		log.Info("Stopped kube-apiserver and etcd", "etcdData", p.etcd)
	}()
	if ctx.Err() != nil {
		return nil
	}
	c, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		return err
	}
	if err := os.WriteFile(p.kubeconfig, env.KubeConfig, 0o600); err != nil {
		return err
	}
	if err := restoreHostKeys(ctx, c, p.hostKeys, log); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return nil
	}

	opCtx, opCancel := context.WithCancel(context.Background())
	defer opCancel()
	go func() { <-ctx.Done(); opCancel() }()
	opts.SSHAddr, opts.Listener = sshAddr, listener
	opts.PublicHost, opts.PublicPort = "127.0.0.1", port
	opts.RepoRoot = p.repos
	operatorDone := make(chan error, 1)
	go func() { operatorDone <- app.Run(opCtx, env.Config, opts, log) }()

	setupCtx, setupCancel := context.WithTimeout(ctx, setupTimeout)
	defer setupCancel()
	setupDone := make(chan error, 1)
	go func() { setupDone <- setUpDemo(setupCtx, c, p, port, metrics, log) }()

	// Run until a signal, a failed setup, or the operator stopping on its own.
	var runErr error
	operatorStopped := false
	select {
	case err := <-setupDone:
		if err != nil && ctx.Err() == nil {
			runErr = err
			break
		}
		select {
		case <-ctx.Done():
		case err := <-operatorDone:
			operatorStopped = true
			runErr = fmt.Errorf("gitssh stopped: %v", err)
		}
	case err := <-operatorDone:
		operatorStopped = true
		runErr = fmt.Errorf("gitssh stopped before the demo was ready: %v", err)
		setupCancel()
		<-setupDone
	}
	if !operatorStopped {
		opCancel()
		log.Info("Waiting for gitssh to stop (running pushes may finish)", "timeout", stopTimeout)
		select {
		case err := <-operatorDone:
			if err != nil {
				log.Error(err, "gitssh stopped with an error")
			} else {
				log.Info("Stopped gitssh")
			}
		case <-hurry:
		case <-time.After(stopTimeout):
			log.Info("gitssh did not stop in time; stopping the control plane anyway")
		}
	}
	return runErr
}

func resolvePaths() (*paths, error) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return nil, err
	}
	dir := os.Getenv("GITSSH_DEV_DIR")
	if dir == "" {
		dir = filepath.Join(root, ".dev")
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	p := &paths{
		root:       root,
		dir:        dir,
		etcd:       filepath.Join(dir, "etcd"),
		hostKeys:   filepath.Join(dir, "host-keys"),
		repos:      filepath.Join(dir, "repositories"),
		logs:       filepath.Join(dir, "logs"),
		pidFile:    filepath.Join(dir, "control-plane.pids"),
		kubeconfig: filepath.Join(dir, "kubeconfig"),
		demoKey:    filepath.Join(dir, "demo_ed25519"),
		knownHosts: filepath.Join(dir, "known_hosts"),
	}
	for _, d := range []string{p.dir, p.etcd, p.hostKeys, p.repos, p.logs} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	if p.assets, err = controlPlaneAssets(root); err != nil {
		return nil, err
	}
	// Print the stable link into the source tree rather than the cache path behind it.
	p.kubectlIn = filepath.Join(p.assets, "kubectl")
	if linked := filepath.Join(root, "bin", "k8s"); sameDir(linked, p.assets) {
		p.kubectlIn = filepath.Join(linked, "kubectl")
	}
	return p, nil
}

// controlPlaneAssets returns the directory with kube-apiserver, etcd and kubectl:
// $KUBEBUILDER_ASSETS, else bin/k8s, else what hack/setup-envtest.sh builds.
func controlPlaneAssets(root string) (string, error) {
	for _, dir := range []string{os.Getenv("KUBEBUILDER_ASSETS"), filepath.Join(root, "bin", "k8s")} {
		if dir != "" && hasControlPlane(dir) {
			return dir, nil
		}
	}
	cmd := exec.Command(filepath.Join(root, "hack", "setup-envtest.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("building the control plane with hack/setup-envtest.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	dir := lines[len(lines)-1]
	if !hasControlPlane(dir) {
		return "", fmt.Errorf("hack/setup-envtest.sh printed %q, which holds no kube-apiserver, etcd and kubectl", dir)
	}
	return dir, nil
}

func hasControlPlane(dir string) bool {
	for _, bin := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return false
		}
	}
	return true
}

func sameDir(a, b string) bool {
	ra, err1 := filepath.EvalSymlinks(a)
	rb, err2 := filepath.EvalSymlinks(b)
	return err1 == nil && err2 == nil && ra == rb
}

// ensureDemoKey creates the demo user's key with ssh-keygen, once.
func ensureDemoKey(ctx context.Context, path string, log logr.Logger) error {
	if _, err := os.Stat(path); err == nil {
		if _, err := os.Stat(path + ".pub"); err == nil {
			return nil
		}
	}
	_ = os.Remove(path)
	_ = os.Remove(path + ".pub")
	out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "demo@gitssh-dev", "-f", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("creating the demo key with ssh-keygen: %w: %s", err, out)
	}
	log.Info("Created the demo key", "path", path)
	return nil
}

// startControlPlane starts etcd (data kept in .dev/etcd) and kube-apiserver, installs
// the CRDs, and returns the running environment. Their output goes to .dev/logs.
func startControlPlane(p *paths, log logr.Logger) (*envtest.Environment, error) {
	etcdLog, err := os.OpenFile(filepath.Join(p.logs, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	apiLog, err := os.OpenFile(filepath.Join(p.logs, "kube-apiserver.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := gitsshv1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: p.assets,
		CRDDirectoryPaths:     []string{filepath.Join(p.root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
		ControlPlane: envtest.ControlPlane{
			// A DataDir of our own is one envtest neither picks nor removes.
			Etcd:      &envtest.Etcd{DataDir: p.etcd, Out: etcdLog, Err: etcdLog},
			APIServer: &envtest.APIServer{Out: apiLog, Err: apiLog},
		},
		ControlPlaneStartTimeout: time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	log.Info("Starting etcd and kube-apiserver", "assets", p.assets, "etcdData", p.etcd, "logs", p.logs)
	if _, err := env.Start(); err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("starting the control plane from %s (logs in %s): %w", p.assets, p.logs, err)
	}
	log.Info("Started kube-apiserver and installed the CRDs", "host", env.Config.Host)
	return env, nil
}

// restoreHostKeys re-creates the host key Secret from .dev/host-keys when it is missing
// (e.g. etcd's data was removed), so the server keeps its identity across runs.
func restoreHostKeys(ctx context.Context, c client.Client, dir string, log logr.Logger) error {
	data, err := readHostKeyFiles(dir)
	if err != nil || len(data) == 0 {
		return err
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: hostKeySecret,
			Labels:      map[string]string{"app.kubernetes.io/managed-by": "gitssh"},
			Annotations: map[string]string{"gitssh.dev/host-keys": "Restored by make dev from " + dir + "; do not delete."},
		},
		Type: corev1.SecretTypeOpaque,
		Data: data,
	}
	if _, err := controllers.ParseHostKeySecret(s); err != nil {
		return fmt.Errorf("the saved host keys in %s do not parse (%w); remove the directory to have new ones generated", dir, err)
	}
	err = c.Create(ctx, s)
	switch {
	case err == nil:
		log.Info("Re-created the host key Secret from the saved keys", "dir", dir)
	case apierrors.IsAlreadyExists(err):
		// etcd kept it; it is the one saved before, unless someone replaced it.
	default:
		return fmt.Errorf("re-creating the host key Secret from %s: %w", dir, err)
	}
	return nil
}

func readHostKeyFiles(dir string) (map[string][]byte, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	data := map[string][]byte{}
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), "ssh_host_") {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				return nil, err
			}
			data[e.Name()] = b
		}
	}
	return data, nil
}

// saveHostKeys writes the host key Secret's entries to .dev/host-keys, once.
func saveHostKeys(ctx context.Context, c client.Client, dir string, log logr.Logger) error {
	s := &corev1.Secret{}
	if err := poll(ctx, "the host key Secret", func() (bool, error) {
		err := c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: hostKeySecret}, s)
		return err == nil, client.IgnoreNotFound(err)
	}); err != nil {
		return err
	}
	saved, err := readHostKeyFiles(dir)
	if err != nil {
		return err
	}
	for name, b := range s.Data {
		if !strings.HasPrefix(name, "ssh_host_") {
			continue
		}
		if old, ok := saved[name]; ok {
			if string(old) != string(b) {
				log.Info("The host key Secret differs from the saved keys; keeping both as they are", "entry", name, "dir", dir)
			}
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// setUpDemo saves the host keys, applies the demo key and project, waits until the
// project is served, writes known_hosts, checks a real `git ls-remote` and prints how to
// use it all.
func setUpDemo(ctx context.Context, c client.Client, p *paths, port int, metricsURL string, log logr.Logger) error {
	if err := saveHostKeys(ctx, c, p.hostKeys, log); err != nil {
		return err
	}
	pub, err := os.ReadFile(p.demoKey + ".pub")
	if err != nil {
		return err
	}
	key := &gitsshv1alpha1.SSHPublicKey{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: demoUser}}
	if _, err := controllerutil.CreateOrUpdate(ctx, c, key, func() error {
		key.Spec.User = demoUser
		key.Spec.PublicKey = strings.TrimSpace(string(pub))
		key.Spec.Description = "The demo key of make dev (" + p.demoKey + ")"
		return nil
	}); err != nil {
		return fmt.Errorf("applying SSHPublicKey %s/%s: %w", namespace, demoUser, err)
	}
	project := &gitsshv1alpha1.GitProject{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: demoUser + "-" + demoProject}}
	if _, err := controllerutil.CreateOrUpdate(ctx, c, project, func() error {
		project.Spec.Owner = demoUser
		project.Spec.Project = demoProject
		return nil
	}); err != nil {
		return fmt.Errorf("applying GitProject %s/%s: %w", namespace, project.Name, err)
	}
	log.Info("Applied the demo objects", "sshpublickey", client.ObjectKeyFromObject(key), "gitproject", client.ObjectKeyFromObject(project))

	if err := poll(ctx, "SSHPublicKey "+namespace+"/"+demoUser+" to be Ready", func() (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(key), key); err != nil {
			return false, err
		}
		return meta.IsStatusConditionTrue(key.Status.Conditions, gitsshv1alpha1.ConditionReady), nil
	}); err != nil {
		return err
	}
	if err := poll(ctx, "GitProject "+namespace+"/"+project.Name+" to be Ready with a clone URL", func() (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(project), project); err != nil {
			return false, err
		}
		return meta.IsStatusConditionTrue(project.Status.Conditions, gitsshv1alpha1.ConditionReady) && project.Status.CloneURL != "", nil
	}); err != nil {
		return err
	}

	// Only the lines for this endpoint: the ConfigMap may still show an older one.
	hostPattern := fmt.Sprintf("[127.0.0.1]:%d ", port)
	if port == 22 {
		hostPattern = "127.0.0.1 "
	}
	var knownHosts string
	cm := &corev1.ConfigMap{}
	if err := poll(ctx, "the published known_hosts", func() (bool, error) {
		err := c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: controllers.KnownHostsConfigMapName(hostKeySecret)}, cm)
		if err != nil {
			return false, client.IgnoreNotFound(err)
		}
		knownHosts = cm.Data["known_hosts"]
		return knownHosts != "" && strings.HasPrefix(knownHosts, hostPattern), nil
	}); err != nil {
		return err
	}
	if err := os.WriteFile(p.knownHosts, []byte(knownHosts), 0o600); err != nil {
		return err
	}

	sshCommand := fmt.Sprintf("ssh -i %s -o IdentitiesOnly=yes -o UserKnownHostsFile=%s", shellWord(p.demoKey), shellWord(p.knownHosts))
	cloneURL := project.Status.CloneURL
	// The same command as printed, made strict: it fails rather than asks.
	if err := poll(ctx, "git ls-remote "+cloneURL+" to work", func() (bool, error) {
		cmd := exec.CommandContext(ctx, "git", "ls-remote", cloneURL)
		cmd.Env = append(os.Environ(), "GIT_SSH_COMMAND="+sshCommand+" -o BatchMode=yes -o StrictHostKeyChecking=yes")
		out, err := cmd.CombinedOutput()
		if err != nil {
			log.V(1).Info("git ls-remote failed; retrying", "output", string(out))
		}
		return err == nil, nil
	}); err != nil {
		return err
	}

	// The metrics address on a line of its own, for scripts: METRICS_URL=http://…/metrics.
	var metricsLine string
	if metricsURL != "" {
		metricsLine = "\nMETRICS_URL=" + metricsURL + "\n"
	}
	fmt.Printf(`
gitssh dev: gitssh serves SSH on 127.0.0.1:%d with user %q's key and project %s/%s.
Everything is kept in %s; Ctrl-C stops it, running it again picks up where it left off.

Run this in another terminal:

  export KUBECONFIG=%s
  %s get sshkeys,gitprojects
  GIT_SSH_COMMAND="%s" git clone %s
%s
%s
`, port, demoUser, demoUser, demoProject, p.dir, shellWord(p.kubeconfig), shellWord(p.kubectlIn), sshCommand, cloneURL, metricsLine, readyLine)
	return nil
}

// poll calls check every 200ms until it reports done, returns an error, or ctx ends.
func poll(ctx context.Context, what string, check func() (bool, error)) error {
	for {
		done, err := check()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, context.Cause(ctx))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// shellWord quotes s for a POSIX shell when it needs it. It goes inside the double
// quotes of GIT_SSH_COMMAND="…" too, so it uses single quotes.
func shellWord(s string) string {
	if strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+@:=,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// controlPlaneNames are the processes envtest starts for us. It starts them in process
// groups of their own, so they outlive this process if it is killed (SIGKILL) rather
// than stopped; the pid file lets the next run find and stop them before etcd's data
// directory is opened again.
var controlPlaneNames = []string{"etcd", "kube-apiserver"}

// writePIDFile records the control plane processes (children of this one) in pidFile.
// It works where /proc does (Linux); elsewhere it writes nothing.
func writePIDFile(pidFile string, log logr.Logger) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	var pids []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := parentPID(pid); ok && ppid == os.Getpid() && isControlPlane(pid) {
			pids = append(pids, strconv.Itoa(pid))
		}
	}
	if err := os.WriteFile(pidFile, []byte(strings.Join(pids, "\n")+"\n"), 0o600); err != nil {
		log.Error(err, "Writing the control plane's pid file failed", "path", pidFile)
	}
}

// stopLeftovers stops the etcd and kube-apiserver of an earlier run that was killed,
// kube-apiserver first.
func stopLeftovers(pidFile string, log logr.Logger) {
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	pids := strings.Fields(string(data))
	for _, name := range []string{"kube-apiserver", "etcd"} {
		for _, field := range pids {
			pid, err := strconv.Atoi(field)
			if err != nil || controlPlaneName(pid) != name {
				continue
			}
			log.Info("Stopping a control plane process left over from an earlier run", "pid", pid, "name", name)
			_ = syscall.Kill(pid, syscall.SIGTERM)
			deadline := time.Now().Add(15 * time.Second)
			for isControlPlane(pid) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			if isControlPlane(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	_ = os.Remove(pidFile)
}

// isControlPlane reports whether pid is a running (not zombie) etcd or kube-apiserver.
func isControlPlane(pid int) bool { return controlPlaneName(pid) != "" }

// controlPlaneName returns "etcd" or "kube-apiserver" when pid is one of them and
// running (not a zombie), else "".
func controlPlaneName(pid int) string {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return ""
	}
	s := string(stat)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return ""
	}
	if fields := strings.Fields(s[closing+1:]); len(fields) == 0 || fields[0] == "Z" {
		return ""
	}
	comm := s[open+1 : closing]
	for _, name := range controlPlaneNames {
		if comm == name {
			return name
		}
	}
	return ""
}

func parentPID(pid int) (int, bool) {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(fields[1])
	return ppid, err == nil
}
