package controllers

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
)

// +kubebuilder:rbac:groups=gitssh.dev,resources=sshpublickeys/status,verbs=get;patch;update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SSHPublicKeyReconciler runs on the leader only. It writes what gitssh made of each key
// into its status: fingerprint, type, size and a Ready condition whose reason says why a
// key cannot log in. It does not decide who logs in; the feeders do, by the same rules.
type SSHPublicKeyReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
}

// SetupWithManager registers the reconciler with mgr. Status writes (ours and the usage
// recorder's) do not change the generation, so they do not trigger a reconcile.
func (r *SSHPublicKeyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("sshpublickey").
		For(&gitsshv1alpha1.SSHPublicKey{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// A key created, changed or deleted can make another object holding the same key
		// a duplicate, or no longer one.
		Watches(&gitsshv1alpha1.SSHPublicKey{},
			handler.EnqueueRequestsFromMapFunc(r.keysWithTheSameFingerprint),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Complete(r)
}

// Reconcile computes one key's status and patches it when it changed.
func (r *SSHPublicKeyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var key gitsshv1alpha1.SSHPublicKey
	if err := r.Client.Get(ctx, req.NamespacedName, &key); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !key.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	before := key.DeepCopy()

	ready, err := r.readyCondition(ctx, &key)
	if err != nil {
		return ctrl.Result{}, err
	}
	ready.ObservedGeneration = key.Generation
	key.Status.ObservedGeneration = key.Generation
	meta.SetStatusCondition(&key.Status.Conditions, ready)

	if equality.Semantic.DeepEqual(before.Status, key.Status) {
		return ctrl.Result{}, nil
	}
	if err := r.Client.Status().Patch(ctx, &key, client.MergeFrom(before)); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("patching status: %w", err)
	}
	recordReadyTransition(ctx, r.Recorder, &key, "Register", meta.FindStatusCondition(before.Status.Conditions, gitsshv1alpha1.ConditionReady), ready,
		"fingerprint", key.Status.Fingerprint, "user", key.Spec.User)
	return ctrl.Result{}, nil
}

// readyCondition fills the key's details into its status and says whether it can log in.
func (r *SSHPublicKeyReconciler) readyCondition(ctx context.Context, key *gitsshv1alpha1.SSHPublicKey) (metav1.Condition, error) {
	parsed, err := parsePublicKey(key.Spec.PublicKey)
	key.Status.Fingerprint, key.Status.KeyType, key.Status.Bits = parsed.Fingerprint, parsed.Type, parsed.Bits
	if kerr := (*keyError)(nil); errors.As(err, &kerr) {
		return falseCondition(kerr.Reason, kerr.Error()), nil
	}

	var holders gitsshv1alpha1.SSHPublicKeyList
	if err := r.Client.List(ctx, &holders, client.MatchingFields{keyFingerprintIndex: parsed.Fingerprint}); err != nil {
		return metav1.Condition{}, err
	}
	if winner := oldest(ptrs(holders.Items)); winner != nil && client.ObjectKeyFromObject(winner) != client.ObjectKeyFromObject(key) {
		return falseCondition(gitsshv1alpha1.ReasonDuplicateKey, fmt.Sprintf(
			"the same key (%s) is already registered by SSHPublicKey %s (user %q), which is older; one key logs in as one user only: delete one of the two objects",
			parsed.Fingerprint, client.ObjectKeyFromObject(winner), winner.(*gitsshv1alpha1.SSHPublicKey).Spec.User)), nil
	}
	return metav1.Condition{
		Type:    gitsshv1alpha1.ConditionReady,
		Status:  metav1.ConditionTrue,
		Reason:  gitsshv1alpha1.ReasonKeyRegistered,
		Message: fmt.Sprintf("%s key %s logs in as user %q", parsed.Type, parsed.Fingerprint, key.Spec.User),
	}, nil
}

func (r *SSHPublicKeyReconciler) keysWithTheSameFingerprint(ctx context.Context, obj client.Object) []reconcile.Request {
	fingerprint := keyFingerprint(obj.(*gitsshv1alpha1.SSHPublicKey))
	return otherClaimants(ctx, r.Client, &gitsshv1alpha1.SSHPublicKeyList{}, keyFingerprintIndex, fingerprint, obj)
}
