package controllers

import (
	"context"
	"time"

	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/internal/authorizer"
	"github.com/gitssh-dev/gitssh/internal/repostore"
)

// The feeders run on every replica, without leader election: each SSH pod keeps its own
// in-memory Authorizer equal to the API's SSHPublicKey and GitProject objects, so a login
// never asks the API server anything. They write nothing to the API.
//
// They are event handlers on the cache's informers rather than controllers: feeding one
// object is a map update, which needs neither a workqueue (whose maps would keep the size
// of the first sync, 10,000 keys, for as long as the process runs) nor a copy of the object.

// +kubebuilder:rbac:groups=gitssh.dev,resources=sshpublickeys;gitprojects,verbs=get;list;watch

// SSHPublicKeyFeeder indexes every usable SSHPublicKey in the Authorizer and removes the
// others.
type SSHPublicKeyFeeder struct {
	Authorizer *authorizer.Authorizer
	// MaxKeyLifetime ends every key that long after its creation at the latest; 0: no
	// maximum. The authorizer checks the instant at each login.
	MaxKeyLifetime time.Duration

	fed toolscache.ResourceEventHandlerRegistration
}

// SetupWithManager feeds the keys in mgr's cache, as they are added, changed and deleted.
func (f *SSHPublicKeyFeeder) SetupWithManager(mgr ctrl.Manager) (err error) {
	f.fed, err = feedFrom(mgr, &gitsshv1alpha1.SSHPublicKey{}, "sshpublickey-feeder", f.feed, f.Authorizer.RemoveKey, "key")
	return err
}

// LoadAll returns once every key in the cache at start-up is fed; the SSH server calls it
// before it accepts its first connection, so that a restarted pod does not refuse valid keys.
func (f *SSHPublicKeyFeeder) LoadAll(ctx context.Context) error { return waitFed(ctx, f.fed) }

func (f *SSHPublicKeyFeeder) feed(key *gitsshv1alpha1.SSHPublicKey) {
	ref := authorizer.ObjectRef{Namespace: key.Namespace, Name: key.Name}
	parsed, err := parsePublicKey(key.Spec.PublicKey)
	if err != nil || !key.DeletionTimestamp.IsZero() {
		// Revoked at once: an invalid, weak or deleted key never logs in.
		f.Authorizer.RemoveKey(ref)
		return
	}
	expires, _ := keyExpiry(key, f.MaxKeyLifetime)
	fingerprint := parsed.Fingerprint
	if key.Status.Fingerprint == fingerprint {
		// The cached object's copy, written by the leader: one string for both (10,000
		// keys' own copies were 0.6 MB).
		fingerprint = key.Status.Fingerprint
	}
	f.Authorizer.SetKey(ref, authorizer.Key{
		Fingerprint: fingerprint,
		User:        key.Spec.User,
		Deploy:      deployBinding(key),
		Created:     key.CreationTimestamp.Time,
		Expires:     expires,
	})
}

// GitProjectFeeder indexes every GitProject in the Authorizer.
type GitProjectFeeder struct {
	Authorizer *authorizer.Authorizer
	Store      repostore.Store

	fed toolscache.ResourceEventHandlerRegistration
}

// SetupWithManager feeds the projects in mgr's cache, as they are added, changed and deleted.
func (f *GitProjectFeeder) SetupWithManager(mgr ctrl.Manager) (err error) {
	f.fed, err = feedFrom(mgr, &gitsshv1alpha1.GitProject{}, "gitproject-feeder", f.feed, f.Authorizer.RemoveProject, "project")
	return err
}

// LoadAll returns once every project in the cache at start-up is fed; see
// SSHPublicKeyFeeder.LoadAll.
func (f *GitProjectFeeder) LoadAll(ctx context.Context) error { return waitFed(ctx, f.fed) }

// feedFrom calls feed with every object of obj's kind in mgr's cache when it is added and
// when its generation changes (status writes leave the authorizer's view alone), and
// remove when it is deleted, in the order the informer sees them. feed only reads the
// object: it is the cache's own.
func feedFrom[T client.Object](mgr ctrl.Manager, obj T, name string, feed func(T), remove func(authorizer.ObjectRef), what string) (toolscache.ResourceEventHandlerRegistration, error) {
	informer, err := mgr.GetCache().GetInformer(context.Background(), obj, cache.BlockUntilSynced(false))
	if err != nil {
		return nil, err
	}
	logger := mgr.GetLogger().WithName(name)
	return informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if o, ok := obj.(T); ok {
				feed(o)
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			old, ok := oldObj.(T)
			o, ok2 := newObj.(T)
			if ok && ok2 && old.GetGeneration() != o.GetGeneration() {
				feed(o)
			}
		},
		DeleteFunc: func(obj any) {
			// A tombstone (a deletion the watch missed) has the key only for sure.
			key, err := toolscache.DeletionHandlingMetaNamespaceKeyFunc(obj)
			if err != nil {
				return
			}
			namespace, objName, _ := toolscache.SplitMetaNamespaceKey(key)
			remove(authorizer.ObjectRef{Namespace: namespace, Name: objName})
			logger.V(1).Info("Removed deleted "+what+" from the authorizer", "namespace", namespace, "name", objName)
		},
	})
}

// waitFed returns once the handler has been called with every object the cache listed at
// start-up.
func waitFed(ctx context.Context, fed toolscache.ResourceEventHandlerRegistration) error {
	select {
	case <-fed.HasSyncedChecker().Done():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
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
