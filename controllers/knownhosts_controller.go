package controllers

import (
	"context"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/gitssh-dev/gitssh/internal/hostkeys"
)

// Keys of the known-hosts ConfigMap.
const (
	// KnownHostsKey holds one known_hosts line per host key, for the clone
	// endpoint: "HOST TYPE BASE64", HOST being "host" on port 22 and
	// "[host]:port" otherwise. Empty while the endpoint is unknown.
	KnownHostsKey = "known_hosts"
	// FingerprintsKey holds one "TYPE SHA256:…" line per host key.
	FingerprintsKey = "fingerprints"
)

// The endpoint is polled, as nothing tells the reconciler it changed: often
// while it is unknown, seldom once it is.
const (
	endpointUnknownRequeue = 10 * time.Second
	endpointKnownRequeue   = time.Minute
)

// knownHostsFieldOwner is the server-side apply field manager of the ConfigMap.
const knownHostsFieldOwner = "gitssh-known-hosts"

// KnownHostsConfigMapName is the name of the ConfigMap that publishes the
// public half of the host key Secret secretName.
func KnownHostsConfigMapName(secretName string) string { return secretName + "-known-hosts" }

// KnownHostsReconciler publishes the public half of the host key Secret in
// the ConfigMap "<secret>-known-hosts", next to the Secret, for clients and
// GitOps tools to pin: known_hosts lines for the clone endpoint and the
// fingerprints. It runs on the leader only.
//
// It reads the Secret from the manager's cache: main should restrict the
// cache's Secrets to this one name (cache.ByObject with a metadata.name field
// selector) rather than cache every Secret of the namespace.
type KnownHostsReconciler struct {
	Client client.Client
	// Secret is the host key Secret (see LoadOrCreateHostKeys).
	Secret types.NamespacedName
	// Endpoint returns the host and port clients clone from. While ok is
	// false (e.g. the LoadBalancer has no address yet) the ConfigMap holds the
	// fingerprints and an empty known_hosts, so that a client pinning it fails
	// closed rather than trusting an unknown host, and the reconciler asks
	// again in 10s. A nil Endpoint is never ok.
	Endpoint func() (host string, port int, ok bool)
}

// RBAC: the Secret and the ConfigMap are granted by name, by hand (see
// LoadOrCreateHostKeys): get, list and watch for the cache, patch and create for Apply.

// Reconcile brings the ConfigMap in line with the Secret and the endpoint.
// Every request means the same thing (the one Secret), whatever its name.
func (r *KnownHostsReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx).WithValues("secret", r.Secret.String())

	secret := &corev1.Secret{}
	if err := r.Client.Get(ctx, r.Secret, secret); err != nil {
		// A missing Secret is created by the next start of gitssh; its watch
		// brings us back then. The old ConfigMap stays until then.
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	signers, err := ParseHostKeySecret(secret)
	if err != nil {
		// The running servers keep the keys they loaded; the next start stops
		// with this error. Nothing to publish until an admin fixes it.
		log.Error(err, "Skipped publishing the host keys")
		return ctrl.Result{}, nil
	}

	host, port, ok := "", 0, false
	if r.Endpoint != nil {
		host, port, ok = r.Endpoint()
	}
	want := map[string]string{
		KnownHostsKey:   "",
		FingerprintsKey: strings.Join(hostkeys.Fingerprints(signers), "\n") + "\n",
	}
	if ok {
		want[KnownHostsKey] = knownHostsLines(host, port, signers)
	}
	requeue := ctrl.Result{RequeueAfter: endpointKnownRequeue}
	if !ok {
		requeue.RequeueAfter = endpointUnknownRequeue
	}

	name := types.NamespacedName{Namespace: r.Secret.Namespace, Name: KnownHostsConfigMapName(r.Secret.Name)}
	current := &corev1.ConfigMap{}
	err = r.Client.Get(ctx, name, current)
	if err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	if err == nil && current.Labels[managedByLabel] == managedByValue && hasData(current.Data, want) {
		return requeue, nil
	}

	cm := corev1ac.ConfigMap(name.Name, name.Namespace).
		WithLabels(map[string]string{managedByLabel: managedByValue}).
		WithData(want)
	if err := r.Client.Apply(ctx, cm, client.FieldOwner(knownHostsFieldOwner), client.ForceOwnership); err != nil {
		return ctrl.Result{}, err
	}
	log.Info("Published the host keys", "configMap", name.String(), "endpointKnown", ok,
		"fingerprints", hostkeys.Fingerprints(signers))
	return requeue, nil
}

// knownHostsLines returns one known_hosts line per signer for host:port.
func knownHostsLines(host string, port int, signers []ssh.Signer) string {
	addr := knownhosts.Normalize(net.JoinHostPort(host, strconv.Itoa(port)))
	var b strings.Builder
	for _, s := range signers {
		b.WriteString(knownhosts.Line([]string{addr}, s.PublicKey()))
		b.WriteByte('\n')
	}
	return b.String()
}

// hasData reports whether data holds every entry of want (other entries,
// added by someone else, are theirs).
func hasData(data, want map[string]string) bool {
	for k, v := range want {
		if got, ok := data[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// SetupWithManager watches the host key Secret and the ConfigMap, by name.
func (r *KnownHostsReconciler) SetupWithManager(mgr ctrl.Manager) error {
	cmName := KnownHostsConfigMapName(r.Secret.Name)
	named := func(name string) predicate.Predicate {
		return predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetNamespace() == r.Secret.Namespace && o.GetName() == name
		})
	}
	toSecret := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: r.Secret}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("knownhosts").
		For(&corev1.Secret{}, builder.WithPredicates(named(r.Secret.Name))).
		Watches(&corev1.ConfigMap{}, toSecret, builder.WithPredicates(named(cmName))).
		Complete(r)
}
