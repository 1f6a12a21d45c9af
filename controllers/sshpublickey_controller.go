package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/internal/authorizer"
)

// +kubebuilder:rbac:groups=gitssh.dev,resources=sshpublickeys/status,verbs=get;patch;update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SSHPublicKeyReconciler runs on the leader only. It writes what gitssh made of each key
// into its status: fingerprint, type, size, expiration time, a Ready condition whose reason
// says why a key cannot log in, and with StaleAfter a Stale condition. It does not decide
// who logs in; the feeders and the authorizer do, by the same rules (authorizer.ClaimWinner).
type SSHPublicKeyReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	// MaxKeyLifetime ends every key that long after its creation at the latest; 0: none.
	MaxKeyLifetime time.Duration
	// ExpiryWarning is how long before its expiration time a key turns ExpiringSoon, with
	// a Warning event. 0: DefaultKeyExpiryWarning; negative: no warning.
	ExpiryWarning time.Duration
	// StaleAfter is how long a key may go unused before it is Stale; 0: no Stale condition.
	StaleAfter time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// DefaultKeyExpiryWarning is how long before it expires a key is reported ExpiringSoon.
const DefaultKeyExpiryWarning = 7 * 24 * time.Hour

// SetupWithManager registers the reconciler with mgr. Status writes (ours and the usage
// recorder's) do not change the generation, so they do not trigger a reconcile, but a new
// lastUsedTime does: it can end a key's staleness. What changes with time alone (the
// warning, the expiry, staleness) comes from RequeueAfter, set to the next such instant.
func (r *SSHPublicKeyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("sshpublickey").
		For(&gitsshv1alpha1.SSHPublicKey{}, builder.WithPredicates(predicate.Or[client.Object](
			predicate.GenerationChangedPredicate{}, lastUsedTimeChanged))).
		// A key created, changed or deleted can make another object holding the same key
		// a duplicate, or no longer one.
		Watches(&gitsshv1alpha1.SSHPublicKey{},
			handler.EnqueueRequestsFromMapFunc(r.keysWithTheSameFingerprint),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// A deploy key is Ready only while a GitProject serves its project.
		Watches(&gitsshv1alpha1.GitProject{},
			handler.EnqueueRequestsFromMapFunc(r.deployKeysOfProject),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Complete(r)
}

// lastUsedTimeChanged passes the updates that record a new login.
var lastUsedTimeChanged = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	before, ok := e.ObjectOld.(*gitsshv1alpha1.SSHPublicKey)
	after, ok2 := e.ObjectNew.(*gitsshv1alpha1.SSHPublicKey)
	return ok && ok2 && !before.Status.LastUsedTime.Equal(after.Status.LastUsedTime)
}}

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
	now := time.Now()
	if r.Now != nil {
		now = r.Now()
	}

	ready, next, err := r.readyCondition(ctx, &key, now)
	if err != nil {
		return ctrl.Result{}, err
	}
	ready.ObservedGeneration = key.Generation
	key.Status.ObservedGeneration = key.Generation
	meta.SetStatusCondition(&key.Status.Conditions, ready)
	if stale, staleAt := r.staleCondition(&key, now); stale == nil {
		meta.RemoveStatusCondition(&key.Status.Conditions, gitsshv1alpha1.ConditionStale)
	} else {
		stale.ObservedGeneration = key.Generation
		meta.SetStatusCondition(&key.Status.Conditions, *stale)
		next = append(next, staleAt)
	}
	result := ctrl.Result{RequeueAfter: untilNext(now, next)}

	if equality.Semantic.DeepEqual(before.Status, key.Status) {
		return result, nil
	}
	if err := r.Client.Status().Patch(ctx, &key, client.MergeFrom(before)); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("patching status: %w", err)
	}
	recordReadyTransition(ctx, r.Recorder, &key, "Register", meta.FindStatusCondition(before.Status.Conditions, gitsshv1alpha1.ConditionReady), ready,
		"fingerprint", key.Status.Fingerprint, "holder", holder(&key))
	recordStaleTransition(ctx, r.Recorder, &key, meta.FindStatusCondition(before.Status.Conditions, gitsshv1alpha1.ConditionStale))
	return result, nil
}

// untilNext is how long until the earliest of the instants after now; 0 (no requeue)
// when there is none.
func untilNext(now time.Time, instants []time.Time) time.Duration {
	var next time.Duration
	for _, t := range instants {
		if d := t.Sub(now); d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	return next
}

// readyCondition fills the key's details into its status and says whether it can log in.
// It also returns the instants at which the answer may change by time alone: this key's
// warning and expiry, and the expiry of the other objects holding the same key.
func (r *SSHPublicKeyReconciler) readyCondition(ctx context.Context, key *gitsshv1alpha1.SSHPublicKey, now time.Time) (metav1.Condition, []time.Time, error) {
	parsed, err := parsePublicKey(key.Spec.PublicKey)
	key.Status.Fingerprint, key.Status.KeyType, key.Status.Bits = parsed.Fingerprint, parsed.Type, parsed.Bits
	expires, capped := keyExpiry(key, r.MaxKeyLifetime)
	key.Status.ExpirationTime = nil
	if !expires.IsZero() {
		key.Status.ExpirationTime = &metav1.Time{Time: expires}
	}
	if kerr := (*keyError)(nil); errors.As(err, &kerr) {
		return falseCondition(kerr.Reason, kerr.Error()), nil, nil
	}
	if !expires.IsZero() && !now.Before(expires) {
		return falseCondition(gitsshv1alpha1.ReasonExpired, fmt.Sprintf("expired at %s%s; %s",
			formatTime(expires), maxLifetimeNote(capped, r.MaxKeyLifetime), renewal(capped))), nil, nil
	}

	holders, err := keysHolding(ctx, r.Client, key.Namespace, parsed.Fingerprint)
	if err != nil {
		return metav1.Condition{}, nil, err
	}
	lost, next := r.lostClaim(key, parsed.Fingerprint, expires, holders, now)
	if lost != nil {
		return *lost, next, nil
	}
	missing, err := r.projectNotFound(ctx, key)
	if err != nil {
		return metav1.Condition{}, nil, err
	}
	if missing != nil {
		return *missing, next, nil
	}

	ready := metav1.Condition{
		Type:    gitsshv1alpha1.ConditionReady,
		Status:  metav1.ConditionTrue,
		Reason:  gitsshv1alpha1.ReasonKeyRegistered,
		Message: fmt.Sprintf("%s key %s logs in as %s", parsed.Type, parsed.Fingerprint, holder(key)),
	}
	if expires.IsZero() {
		return ready, next, nil
	}
	ready.Message += fmt.Sprintf(" until %s%s", formatTime(expires), maxLifetimeNote(capped, r.MaxKeyLifetime))
	next = append(next, expires)
	warning := r.ExpiryWarning
	if warning == 0 {
		warning = DefaultKeyExpiryWarning
	}
	if warning > 0 {
		warnAt := expires.Add(-warning)
		next = append(next, warnAt)
		if !now.Before(warnAt) {
			ready.Reason = gitsshv1alpha1.ReasonExpiringSoon
			ready.Message += fmt.Sprintf("; it expires within %s: %s", days(warning), renewal(capped))
		}
	}
	return ready, next, nil
}

// lostClaim returns the Ready condition of a key that another object holding the same key
// keeps from logging in, by the authorizer's rule (authorizer.ClaimWinner), or nil when the
// key wins. It also returns the other holders' expiration times, at which the answer may
// change.
func (r *SSHPublicKeyReconciler) lostClaim(key *gitsshv1alpha1.SSHPublicKey, fingerprint string, expires time.Time, holders []*gitsshv1alpha1.SSHPublicKey, now time.Time) (*metav1.Condition, []time.Time) {
	claims := []authorizer.Claim{{Ref: keyRef(key), Created: key.CreationTimestamp.Time, Expires: expires}}
	byRef := map[authorizer.ObjectRef]*gitsshv1alpha1.SSHPublicKey{}
	var next []time.Time
	var expiredOlder *gitsshv1alpha1.SSHPublicKey
	var expiredOlderAt time.Time
	for _, other := range holders {
		if !other.DeletionTimestamp.IsZero() || keyRef(other) == keyRef(key) {
			continue
		}
		otherExpires, _ := keyExpiry(other, r.MaxKeyLifetime)
		claims = append(claims, authorizer.Claim{Ref: keyRef(other), Created: other.CreationTimestamp.Time, Expires: otherExpires})
		byRef[keyRef(other)] = other
		if otherExpires.IsZero() {
			continue
		}
		next = append(next, otherExpires)
		if olderThan(other, key) && !now.Before(otherExpires) {
			expiredOlder, expiredOlderAt = other, otherExpires
		}
	}
	winner, ok := authorizer.ClaimWinner(claims, now)
	switch {
	case ok && winner.Ref == keyRef(key):
		return nil, next
	case ok && olderThan(byRef[winner.Ref], key):
		c := falseCondition(gitsshv1alpha1.ReasonDuplicateKey, fmt.Sprintf(
			"the same key (%s) is already registered by SSHPublicKey %s (%s), which is older; one key logs in as one user or deploy key only: delete one of the two objects",
			fingerprint, winner.Ref, holder(byRef[winner.Ref])))
		return &c, next
	default:
		// Only an expired older claim keeps a live key without expiry from winning.
		c := falseCondition(gitsshv1alpha1.ReasonDuplicateKey, fmt.Sprintf(
			"the same key (%s) was registered by SSHPublicKey %s, which expired at %s; an expired key comes back only with an expiration time: set spec.expirationTime",
			fingerprint, client.ObjectKeyFromObject(expiredOlder), formatTime(expiredOlderAt)))
		return &c, next
	}
}

// projectNotFound returns the Ready condition of a deploy key whose project no GitProject
// serves (one being deleted no longer does), or nil.
func (r *SSHPublicKeyReconciler) projectNotFound(ctx context.Context, key *gitsshv1alpha1.SSHPublicKey) (*metav1.Condition, error) {
	if key.Spec.Project == "" {
		return nil, nil
	}
	var projects gitsshv1alpha1.GitProjectList
	if err := r.Client.List(ctx, &projects, client.InNamespace(key.Namespace), client.MatchingFields{projectAddressIndex: key.Spec.Project}); err != nil {
		return nil, err
	}
	if oldest(ptrs(projects.Items)) != nil {
		return nil, nil
	}
	owner, project, _ := strings.Cut(key.Spec.Project, "/")
	c := falseCondition(gitsshv1alpha1.ReasonProjectNotFound, fmt.Sprintf(
		"no GitProject serves %q, so this deploy key reaches nothing: create a GitProject with spec.owner %q and spec.project %q, or correct spec.project",
		key.Spec.Project, owner, project))
	return &c, nil
}

func (r *SSHPublicKeyReconciler) deployKeysOfProject(ctx context.Context, obj client.Object) []reconcile.Request {
	return indexed(ctx, r.Client, &gitsshv1alpha1.SSHPublicKeyList{}, deployProjectIndex, projectAddress(obj.(*gitsshv1alpha1.GitProject)), obj.GetNamespace())
}

func keyRef(key *gitsshv1alpha1.SSHPublicKey) authorizer.ObjectRef {
	return authorizer.ObjectRef{Namespace: key.Namespace, Name: key.Name}
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func maxLifetimeNote(capped bool, maxLifetime time.Duration) string {
	if !capped {
		return ""
	}
	return fmt.Sprintf(" (%s after its creation, the server's --max-key-lifetime)", days(maxLifetime))
}

// renewal says what to do about a key that expires or has expired.
func renewal(capped bool) string {
	if capped {
		return "register a new key (a new SSHPublicKey with a new key pair)"
	}
	return "set a later spec.expirationTime, or register a new key"
}

// staleCondition says whether the key went unused for longer than StaleAfter, counting
// from its last login or, when it never logged in, its creation; nil without StaleAfter.
// It also returns the instant the key turns stale if it is not used before.
func (r *SSHPublicKeyReconciler) staleCondition(key *gitsshv1alpha1.SSHPublicKey, now time.Time) (*metav1.Condition, time.Time) {
	if r.StaleAfter <= 0 {
		return nil, time.Time{}
	}
	since, what := key.CreationTimestamp.Time, "never logged in since it was created at"
	if used := key.Status.LastUsedTime; used != nil && used.After(since) {
		since, what = used.Time, "has not logged in since"
	}
	staleAt := since.Add(r.StaleAfter)
	if now.Before(staleAt) {
		// No time in the message: it would change, and be written, with every login.
		return &metav1.Condition{Type: gitsshv1alpha1.ConditionStale, Status: metav1.ConditionFalse, Reason: gitsshv1alpha1.ReasonRecentlyUsed,
			Message: fmt.Sprintf("logged in or created within the last %s (--stale-key-after)", days(r.StaleAfter))}, staleAt
	}
	return &metav1.Condition{Type: gitsshv1alpha1.ConditionStale, Status: metav1.ConditionTrue, Reason: gitsshv1alpha1.ReasonUnused,
		Message: fmt.Sprintf("%s %s, more than %s ago (--stale-key-after); delete it if nobody needs it", what, formatTime(since), days(r.StaleAfter))}, staleAt
}

func (r *SSHPublicKeyReconciler) keysWithTheSameFingerprint(ctx context.Context, obj client.Object) []reconcile.Request {
	return otherKeysHolding(ctx, r.Client, obj.(*gitsshv1alpha1.SSHPublicKey))
}
