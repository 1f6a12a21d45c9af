package controllers

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/internal/authorizer"
	"github.com/gitssh-dev/gitssh/internal/repostore"
)

// The feeders run on every replica, without leader election: each SSH pod keeps its own
// in-memory Authorizer equal to the API's SSHPublicKey and GitProject objects, so a login
// never asks the API server anything. They write nothing to the API.

// +kubebuilder:rbac:groups=gitssh.dev,resources=sshpublickeys;gitprojects,verbs=get;list;watch

// SSHPublicKeyFeeder indexes every usable SSHPublicKey in the Authorizer and removes the
// others.
type SSHPublicKeyFeeder struct {
	Client     client.Client
	Authorizer *authorizer.Authorizer
	// MaxKeyLifetime ends every key that long after its creation at the latest; 0: no
	// maximum. The authorizer checks the instant at each login.
	MaxKeyLifetime time.Duration
}

// SetupWithManager registers the feeder with mgr.
func (f *SSHPublicKeyFeeder) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("sshpublickey-feeder").
		For(&gitsshv1alpha1.SSHPublicKey{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)}).
		Complete(f)
}

// Reconcile feeds one SSHPublicKey into the Authorizer.
func (f *SSHPublicKeyFeeder) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var key gitsshv1alpha1.SSHPublicKey
	if err := f.Client.Get(ctx, req.NamespacedName, &key); err != nil {
		if apierrors.IsNotFound(err) {
			f.Authorizer.RemoveKey(authorizer.ObjectRef{Namespace: req.Namespace, Name: req.Name})
			log.FromContext(ctx).V(1).Info("Removed deleted key from the authorizer")
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	f.feed(&key)
	return ctrl.Result{}, nil
}

// LoadAll feeds every SSHPublicKey in the cache; the SSH server calls it before it accepts
// its first connection, so that a restarted pod does not refuse valid keys while its
// reconcile queue drains.
func (f *SSHPublicKeyFeeder) LoadAll(ctx context.Context) error {
	var keys gitsshv1alpha1.SSHPublicKeyList
	// feed only reads: the cache's own objects spare a copy of every key at start-up.
	if err := f.Client.List(ctx, &keys, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	for _, key := range ptrs(keys.Items) {
		f.feed(key)
	}
	return nil
}

func (f *SSHPublicKeyFeeder) feed(key *gitsshv1alpha1.SSHPublicKey) {
	ref := authorizer.ObjectRef{Namespace: key.Namespace, Name: key.Name}
	parsed, err := parsePublicKey(key.Spec.PublicKey)
	if err != nil || !key.DeletionTimestamp.IsZero() {
		// Revoked at once: an invalid, weak or deleted key never logs in.
		f.Authorizer.RemoveKey(ref)
		return
	}
	expires, _ := keyExpiry(key, f.MaxKeyLifetime)
	f.Authorizer.SetKey(ref, authorizer.Key{
		Fingerprint: parsed.Fingerprint,
		User:        key.Spec.User,
		Deploy:      deployBinding(key),
		Created:     key.CreationTimestamp.Time,
		Expires:     expires,
	})
}

// GitProjectFeeder indexes every GitProject in the Authorizer.
type GitProjectFeeder struct {
	Client     client.Client
	Authorizer *authorizer.Authorizer
	Store      repostore.Store
}

// SetupWithManager registers the feeder with mgr.
func (f *GitProjectFeeder) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("gitproject-feeder").
		For(&gitsshv1alpha1.GitProject{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)}).
		Complete(f)
}

// Reconcile feeds one GitProject into the Authorizer.
func (f *GitProjectFeeder) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var project gitsshv1alpha1.GitProject
	if err := f.Client.Get(ctx, req.NamespacedName, &project); err != nil {
		if apierrors.IsNotFound(err) {
			f.Authorizer.RemoveProject(authorizer.ObjectRef{Namespace: req.Namespace, Name: req.Name})
			log.FromContext(ctx).V(1).Info("Removed deleted project from the authorizer")
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	f.feed(&project)
	return ctrl.Result{}, nil
}

// LoadAll feeds every GitProject in the cache; see SSHPublicKeyFeeder.LoadAll.
func (f *GitProjectFeeder) LoadAll(ctx context.Context) error {
	var projects gitsshv1alpha1.GitProjectList
	if err := f.Client.List(ctx, &projects, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	for _, project := range ptrs(projects.Items) {
		f.feed(project)
	}
	return nil
}

func (f *GitProjectFeeder) feed(project *gitsshv1alpha1.GitProject) {
	ref := authorizer.ObjectRef{Namespace: project.Namespace, Name: project.Name}
	if !project.DeletionTimestamp.IsZero() {
		f.Authorizer.RemoveProject(ref)
		return
	}
	members := make(map[string]authorizer.Role, len(project.Spec.Members))
	for _, m := range project.Spec.Members {
		members[m.User] = authorizerRole(m.Role)
	}
	visibility := authorizer.Private
	if project.Spec.Visibility == gitsshv1alpha1.VisibilityPublic {
		visibility = authorizer.Public
	}
	var quota int64
	if project.Spec.Quota != nil {
		quota = project.Spec.Quota.Value()
	}
	f.Authorizer.SetProject(ref, authorizer.Project{
		Owner:          project.Spec.Owner,
		Name:           project.Spec.Project,
		Visibility:     visibility,
		Members:        members,
		RepositoryPath: f.Store.Path(project.Spec.Owner, project.Spec.Project),
		Quota:          quota,
		Created:        project.CreationTimestamp.Time,
	})
}

func authorizerRole(role gitsshv1alpha1.Role) authorizer.Role {
	switch role {
	case gitsshv1alpha1.RoleRead:
		return authorizer.RoleRead
	case gitsshv1alpha1.RoleWrite:
		return authorizer.RoleWrite
	case gitsshv1alpha1.RoleAdmin:
		return authorizer.RoleAdmin
	}
	return authorizer.RoleNone
}
