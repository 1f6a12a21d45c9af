package controllers

import (
	"context"
	"errors"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/gitssh-dev/gitssh/sshserver"
)

// Keys of the trusted user CA ConfigMap (--trusted-user-ca-keys).
const (
	// TrustedUserCAKeysKey holds the CAs' public keys, one per line, as sshd's
	// TrustedUserCAKeys file does.
	TrustedUserCAKeysKey = "trusted_user_ca_keys"
	// RevokedCertificatesKey holds the revoked certificates, in the text form of an
	// ssh-keygen key revocation list specification: serial:, id:, key: and hash: lines.
	RevokedCertificatesKey = "revoked_certificates"
)

// ReasonInvalidTrustedUserCAs is the Warning event reason on a ConfigMap that does not
// parse; until it is fixed, no certificate logs in.
const ReasonInvalidTrustedUserCAs = "InvalidTrustedUserCAs"

// RBAC: the ConfigMap is read by name, by hand (see LoadOrCreateHostKeys).

// TrustedUserCAReconciler keeps the SSH server's trusted user CAs equal to the ConfigMap
// that lists them. It runs on every replica, each serving SSH, and writes nothing but a
// Warning event when the ConfigMap does not parse.
type TrustedUserCAReconciler struct {
	// Cache holds the one ConfigMap: the manager's cache watches only the known-hosts one,
	// and a field selector can name one object only.
	Cache     cache.Cache
	ConfigMap types.NamespacedName
	CAs       *sshserver.TrustedUserCAs
	Events    events.EventRecorder
}

// SetupWithManager watches the ConfigMap in r.Cache.
func (r *TrustedUserCAReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("trusted-user-cas").
		WatchesRawSource(source.Kind(r.Cache, &corev1.ConfigMap{}, &handler.TypedEnqueueRequestForObject[*corev1.ConfigMap]{})).
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)}).
		Complete(r)
}

// LoadAll loads the ConfigMap once its cache has synced; the SSH server calls it before it
// accepts its first connection, so that a restarted pod accepts certificates at once.
func (r *TrustedUserCAReconciler) LoadAll(ctx context.Context) error {
	if !r.Cache.WaitForCacheSync(ctx) {
		return errors.New("the trusted user CA cache did not sync")
	}
	_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: r.ConfigMap})
	return err
}

// Reconcile loads the ConfigMap into the SSH server. A missing ConfigMap trusts no CA; one
// that does not parse trusts none either (a mistyped revocation must not leave the revoked
// certificate working) until it is fixed.
func (r *TrustedUserCAReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx).WithValues("configMap", r.ConfigMap.String())
	cm := &corev1.ConfigMap{}
	err := r.Cache.Get(ctx, r.ConfigMap, cm)
	switch {
	case apierrors.IsNotFound(err):
		r.CAs.Set(nil)
		log.Info("Trusted no user CA: the ConfigMap does not exist; certificates are refused until it does")
		return ctrl.Result{}, nil
	case err != nil:
		return ctrl.Result{}, err
	}
	cas, err := sshserver.ParseUserCAs(cm.Data[TrustedUserCAKeysKey], cm.Data[RevokedCertificatesKey])
	if err != nil {
		r.CAs.Set(nil)
		log.Error(err, "Trusted no user CA: the ConfigMap does not parse; certificates are refused until it is fixed")
		if r.Events != nil {
			r.Events.Eventf(cm, nil, corev1.EventTypeWarning, ReasonInvalidTrustedUserCAs, "Load",
				"%v; no certificate logs in until this ConfigMap is fixed", err)
		}
		return ctrl.Result{}, nil
	}
	r.CAs.Set(cas)
	log.Info("Loaded trusted user CAs", "fingerprints", cas.Fingerprints(), "revocations", cas.Revocations())
	return ctrl.Result{}, nil
}
