package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/internal/repostore"
)

// RepositoryFinalizer lets gitssh see a GitProject's deletion, to remove its repository
// (deletionPolicy Delete) or to say that it kept it (Retain).
const RepositoryFinalizer = "gitssh.dev/repository"

// notServingRetry is how soon a project whose clone URL cannot be shown yet is looked at again.
const notServingRetry = 5 * time.Second

// endpointRecheck is how often a Ready project's clone URL is checked against the public
// address, which can change (a new LoadBalancer address) without any event on the project.
const endpointRecheck = 5 * time.Minute

// +kubebuilder:rbac:groups=gitssh.dev,resources=gitprojects,verbs=get;list;watch;patch;update
// +kubebuilder:rbac:groups=gitssh.dev,resources=gitprojects/status,verbs=get;patch;update
// +kubebuilder:rbac:groups=gitssh.dev,resources=gitprojects/finalizers,verbs=update

// GitProjectReconciler runs on the leader only. It creates each project's bare repository,
// removes it on deletion when asked to, and reports the clone URL and a Ready condition.
type GitProjectReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	Store    repostore.Store
	// SSHUser is the user name in clone URLs.
	SSHUser string
	// Endpoint resolves the host and port of clone URLs.
	Endpoint *PublicEndpoint
	// Serving reports whether the SSH server accepts connections; until it does, projects
	// show no clone URL.
	Serving func() bool
}

// SetupWithManager registers the reconciler with mgr.
func (r *GitProjectReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("gitproject").
		// A push shows up as a new status.lastPushTime (written by the usage recorder, at most
		// once per flush interval): measure the repository again then, not only every
		// endpointRecheck, so that size and quota condition follow pushes within a minute.
		For(&gitsshv1alpha1.GitProject{}, builder.WithPredicates(predicate.Or[client.Object](
			predicate.GenerationChangedPredicate{}, lastPushTimeChanged))).
		// Deleting the project that holds OWNER/PROJECT hands it to the next one.
		Watches(&gitsshv1alpha1.GitProject{},
			handler.EnqueueRequestsFromMapFunc(r.projectsWithTheSameAddress),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Complete(r)
}

// Reconcile brings one project's repository and status in line with its spec.
func (r *GitProjectReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, err error) {
	var project gitsshv1alpha1.GitProject
	if err := r.Client.Get(ctx, req.NamespacedName, &project); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !project.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, &project)
	}
	if err := r.ensureFinalizer(ctx, &project); err != nil {
		return ctrl.Result{}, err
	}

	before := project.DeepCopy()
	ready, requeue := r.provision(ctx, &project)
	ready.ObservedGeneration = project.Generation
	project.Status.ObservedGeneration = project.Generation
	meta.SetStatusCondition(&project.Status.Conditions, ready)
	r.measure(ctx, &project, ready)
	result.RequeueAfter = endpointRecheck
	if requeue {
		result.RequeueAfter = notServingRetry
	}

	if equality.Semantic.DeepEqual(before.Status, project.Status) {
		return result, nil
	}
	// Optimistic lock: the conditions are one list in a merge patch, and the housekeeping
	// controller writes its Maintenance condition into the same list.
	if err := r.Client.Status().Patch(ctx, &project, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("patching status: %w", err)
	}
	recordReadyTransition(ctx, r.Recorder, &project, "Provision", meta.FindStatusCondition(before.Status.Conditions, gitsshv1alpha1.ConditionReady), ready,
		"cloneURL", project.Status.CloneURL)
	recordQuotaTransition(ctx, r.Recorder, &project, meta.FindStatusCondition(before.Status.Conditions, gitsshv1alpha1.ConditionWithinQuota))
	return result, nil
}

// lastPushTimeChanged passes the updates that record a new push.
var lastPushTimeChanged = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	before, ok := e.ObjectOld.(*gitsshv1alpha1.GitProject)
	after, ok2 := e.ObjectNew.(*gitsshv1alpha1.GitProject)
	return ok && ok2 && !before.Status.LastPushTime.Equal(after.Status.LastPushTime)
}}

// measure records the repository's size in the status and, when the project has a quota,
// whether the repository is within it. The SSH servers measure again on every push and
// enforce the quota themselves; this is what people and alerts see.
func (r *GitProjectReconciler) measure(ctx context.Context, project *gitsshv1alpha1.GitProject, ready metav1.Condition) {
	switch ready.Reason {
	case gitsshv1alpha1.ReasonProjectConflict:
		// The repository is another object's.
		project.Status.Repository = nil
		meta.RemoveStatusCondition(&project.Status.Conditions, gitsshv1alpha1.ConditionWithinQuota)
		return
	case gitsshv1alpha1.ReasonRepositoryError:
		return // nothing to measure, or no way to tell; keep the last measurement
	}
	size, err := repostore.DiskUsage(project.Status.RepositoryPath)
	if err != nil {
		log.FromContext(ctx).Error(err, "Failed to measure the repository", "path", project.Status.RepositoryPath)
		return
	}
	if project.Status.Repository == nil {
		project.Status.Repository = &gitsshv1alpha1.RepositoryStatus{}
	}
	// The other facts are housekeeping's (housekeeping_controller.go).
	project.Status.Repository.SizeBytes, project.Status.Repository.Size = size, repostore.FormatSize(size)
	if project.Spec.Quota == nil {
		meta.RemoveStatusCondition(&project.Status.Conditions, gitsshv1alpha1.ConditionWithinQuota)
		return
	}
	quota := project.Spec.Quota.Value()
	within := metav1.Condition{
		Type:               gitsshv1alpha1.ConditionWithinQuota,
		Status:             metav1.ConditionTrue,
		Reason:             gitsshv1alpha1.ReasonWithinQuota,
		Message:            fmt.Sprintf("uses %s of its %s quota", repostore.FormatSize(size), repostore.FormatSize(quota)),
		ObservedGeneration: project.Generation,
	}
	if size >= quota {
		within.Status, within.Reason = metav1.ConditionFalse, gitsshv1alpha1.ReasonOverQuota
		within.Message += "; pushes are refused until it is below: raise spec.quota"
	}
	meta.SetStatusCondition(&project.Status.Conditions, within)
}

// provision creates the repository if this object holds OWNER/PROJECT and fills the status.
// It returns the Ready condition, and whether to look again soon because the clone URL is
// not known yet.
func (r *GitProjectReconciler) provision(ctx context.Context, project *gitsshv1alpha1.GitProject) (metav1.Condition, bool) {
	spec := project.Spec
	winner, err := r.addressHolder(ctx, project)
	if err != nil {
		return falseCondition(gitsshv1alpha1.ReasonRepositoryError, err.Error()), true
	}
	if winner != nil && client.ObjectKeyFromObject(winner) != client.ObjectKeyFromObject(project) {
		project.Status.CloneURL, project.Status.RepositoryPath = "", ""
		return falseCondition(gitsshv1alpha1.ReasonProjectConflict, fmt.Sprintf(
			"%s/%s is already served by GitProject %s, which is older; delete one of the two objects or choose another owner or project",
			spec.Owner, spec.Project, client.ObjectKeyFromObject(winner))), false
	}

	created, err := r.Store.Create(ctx, spec.Owner, spec.Project, spec.DefaultBranch)
	if err != nil {
		project.Status.CloneURL = ""
		return falseCondition(gitsshv1alpha1.ReasonRepositoryError, fmt.Sprintf("creating the repository: %v", err)), true
	}
	project.Status.RepositoryPath = r.Store.Path(spec.Owner, spec.Project)
	if created {
		r.Recorder.Eventf(project, nil, corev1.EventTypeNormal, "RepositoryCreated", "Provision",
			"Created bare repository %s with default branch %s", project.Status.RepositoryPath, spec.DefaultBranch)
		log.FromContext(ctx).Info("Created repository", "path", project.Status.RepositoryPath, "defaultBranch", spec.DefaultBranch)
	}

	if r.Serving != nil && !r.Serving() {
		project.Status.CloneURL = ""
		return falseCondition(gitsshv1alpha1.ReasonNotServing, "the repository exists, but the SSH server is not accepting connections yet"), true
	}
	host, port, ok := r.Endpoint.Resolve(ctx)
	if !ok {
		project.Status.CloneURL = ""
		return falseCondition(gitsshv1alpha1.ReasonNotServing, fmt.Sprintf(
			"the repository exists, but the SSH server has no public address yet: set --ssh-public-host, or wait for the LoadBalancer Service %s to get one",
			r.Endpoint.Service)), true
	}
	project.Status.CloneURL = CloneURL(r.SSHUser, host, port, spec.Owner, spec.Project)
	return metav1.Condition{
		Type:    gitsshv1alpha1.ConditionReady,
		Status:  metav1.ConditionTrue,
		Reason:  gitsshv1alpha1.ReasonRepositoryReady,
		Message: "clone with: git clone " + project.Status.CloneURL,
	}, false
}

// addressHolder returns the GitProject that holds this project's OWNER/PROJECT.
func (r *GitProjectReconciler) addressHolder(ctx context.Context, project *gitsshv1alpha1.GitProject) (client.Object, error) {
	var claimants gitsshv1alpha1.GitProjectList
	if err := r.Client.List(ctx, &claimants, client.InNamespace(project.Namespace), client.MatchingFields{projectAddressIndex: projectAddress(project)}); err != nil {
		return nil, err
	}
	return oldest(ptrs(claimants.Items)), nil
}

func (r *GitProjectReconciler) ensureFinalizer(ctx context.Context, project *gitsshv1alpha1.GitProject) error {
	if controllerutil.ContainsFinalizer(project, RepositoryFinalizer) {
		return nil
	}
	before := project.DeepCopy()
	controllerutil.AddFinalizer(project, RepositoryFinalizer)
	return r.Client.Patch(ctx, project, client.MergeFrom(before))
}

// finalize removes or keeps the repository of a deleted project, as its deletionPolicy
// says, and lets the object go. A project that lost the OWNER/PROJECT conflict never owned
// the repository and leaves it alone.
func (r *GitProjectReconciler) finalize(ctx context.Context, project *gitsshv1alpha1.GitProject) error {
	if !controllerutil.ContainsFinalizer(project, RepositoryFinalizer) {
		return nil
	}
	spec := project.Spec
	path := r.Store.Path(spec.Owner, spec.Project)
	owned, err := r.ownsRepository(ctx, project)
	if err != nil {
		return err
	}
	switch {
	case !owned:
		// Another GitProject serves this repository; it is not ours to delete.
	case spec.DeletionPolicy == gitsshv1alpha1.DeletionPolicyDelete:
		if err := r.Store.Delete(spec.Owner, spec.Project); err != nil {
			r.Recorder.Eventf(project, nil, corev1.EventTypeWarning, "RepositoryDeleteFailed", "Delete",
				"Could not delete repository %s: %v", path, err)
			return err
		}
		r.Recorder.Eventf(project, nil, corev1.EventTypeNormal, "RepositoryDeleted", "Delete",
			"Deleted repository %s (deletionPolicy Delete)", path)
		log.FromContext(ctx).Info("Deleted repository", "path", path)
	default:
		r.Recorder.Eventf(project, nil, corev1.EventTypeNormal, "RepositoryRetained", "Delete",
			"Kept repository %s on disk (deletionPolicy Retain); a new GitProject %s/%s serves it again",
			path, spec.Owner, spec.Project)
		log.FromContext(ctx).Info("Retained repository", "path", path)
	}
	before := project.DeepCopy()
	controllerutil.RemoveFinalizer(project, RepositoryFinalizer)
	return client.IgnoreNotFound(r.Client.Patch(ctx, project, client.MergeFrom(before)))
}

// ownsRepository reports whether project is the oldest of the objects claiming its
// OWNER/PROJECT, counting itself although it is being deleted.
func (r *GitProjectReconciler) ownsRepository(ctx context.Context, project *gitsshv1alpha1.GitProject) (bool, error) {
	var claimants gitsshv1alpha1.GitProjectList
	if err := r.Client.List(ctx, &claimants, client.InNamespace(project.Namespace), client.MatchingFields{projectAddressIndex: projectAddress(project)}); err != nil {
		return false, err
	}
	winner := oldestOf(ptrs(claimants.Items), true)
	return winner == nil || winner.GetUID() == project.UID, nil
}

func (r *GitProjectReconciler) projectsWithTheSameAddress(ctx context.Context, obj client.Object) []reconcile.Request {
	address := projectAddress(obj.(*gitsshv1alpha1.GitProject))
	return otherClaimants(ctx, r.Client, &gitsshv1alpha1.GitProjectList{}, projectAddressIndex, address, obj)
}
