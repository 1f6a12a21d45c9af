package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/internal/housekeeping"
	"github.com/gitssh-dev/gitssh/internal/repostore"
)

// Housekeeping defaults.
const (
	// DefaultHousekeepingInterval: a full run at least once a day, which also drops what
	// has been unreachable for longer than the prune grace.
	DefaultHousekeepingInterval = 24 * time.Hour
	// DefaultHousekeepingPushDelay: after pushes, an incremental run at most every 5
	// minutes per repository, so a burst of pushes costs one run.
	DefaultHousekeepingPushDelay = 5 * time.Minute
	// DefaultHousekeepingTimeout bounds one run.
	DefaultHousekeepingTimeout = time.Hour
	// DefaultHousekeepingConcurrency: runs at once on the leader. One keeps the leader's
	// CPU for serving; raise it on large nodes with many repositories.
	DefaultHousekeepingConcurrency = 1
)

var (
	housekeepingRuns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gitssh_housekeeping_runs_total",
		Help: "Housekeeping runs, by kind (full, incremental) and result (succeeded, failed).",
	}, []string{"kind", "result"})
	housekeepingFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gitssh_housekeeping_failures_total",
		Help: "Failed housekeeping runs, by the git step that failed (prune, repack, commit-graph, timeout, other).",
	}, []string{"step"})
	housekeepingDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "gitssh_housekeeping_duration_seconds",
		Help:    "How long housekeeping runs took, by kind.",
		Buckets: prometheus.ExponentialBuckets(0.05, 4, 9), // 50 ms to about 55 min
	}, []string{"kind"})
	housekeepingRunning = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "gitssh_housekeeping_running",
		Help: "Housekeeping runs in progress.",
	})
	housekeepingFailing = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gitssh_housekeeping_failing_repositories",
		Help: "GitProjects whose last housekeeping run failed (condition Maintenance False), by reason: MaintenanceFailed or MaintenanceTimedOut.",
	}, []string{"reason"})
)

func init() {
	metrics.Registry.MustRegister(housekeepingRuns, housekeepingFailures, housekeepingDuration, housekeepingRunning, housekeepingFailing)
	// Every series from the start, at 0, as the SSH server's: alerts and rate() need no
	// first run.
	for _, kind := range []string{"full", "incremental"} {
		housekeepingRuns.WithLabelValues(kind, "succeeded")
		housekeepingRuns.WithLabelValues(kind, "failed")
		housekeepingDuration.WithLabelValues(kind)
	}
	for _, step := range housekeeping.Plan(housekeeping.Options{}) {
		housekeepingFailures.WithLabelValues(step.Name)
	}
	housekeepingFailures.WithLabelValues("timeout")
	housekeepingFailures.WithLabelValues("other")
	recordMaintenance(types.NamespacedName{}, nil)
}

// failing holds the projects whose Maintenance condition is False. An alert on the failed
// runs' counter would go quiet after one failure a day; this stays up until a run succeeds.
// It exports a count by reason, never a series per repository: the conditions name them.
var failing = struct {
	sync.Mutex
	reasons map[types.NamespacedName]string
}{reasons: map[types.NamespacedName]string{}}

// recordMaintenance sets gitssh_housekeeping_failing_repositories from a project's
// Maintenance condition; nil: the project is gone, or has none.
func recordMaintenance(key types.NamespacedName, c *metav1.Condition) {
	failing.Lock()
	defer failing.Unlock()
	if c != nil && c.Status == metav1.ConditionFalse {
		failing.reasons[key] = c.Reason
	} else {
		delete(failing.reasons, key)
	}
	counts := map[string]float64{}
	for _, reason := range failing.reasons {
		counts[reason]++
	}
	for _, reason := range []string{gitsshv1alpha1.ReasonMaintenanceFailed, gitsshv1alpha1.ReasonMaintenanceTimedOut} {
		housekeepingFailing.WithLabelValues(reason).Set(counts[reason])
	}
}

// HousekeepingReconciler runs housekeeping (internal/housekeeping) on the leader: a full
// run on each repository every Interval and when the MaintenanceRequestedAtAnnotation asks
// for one, and an incremental run after pushes, at most once per PushDelay. It is its own
// controller, apart from GitProjectReconciler, so that a long run never delays
// provisioning. controller-runtime never reconciles one object twice at once and only the
// leader runs it, so there are never two runs on one repository; Concurrency bounds the
// runs on different ones.
type HousekeepingReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	// Options are passed to every run; Full is set per run.
	Options     housekeeping.Options
	Interval    time.Duration
	PushDelay   time.Duration
	Timeout     time.Duration
	Concurrency int
}

// SetupWithManager registers the reconciler with mgr.
func (r *HousekeepingReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.Interval = orDefault(r.Interval, DefaultHousekeepingInterval)
	r.PushDelay = orDefault(r.PushDelay, DefaultHousekeepingPushDelay)
	r.Timeout = orDefault(r.Timeout, DefaultHousekeepingTimeout)
	r.Concurrency = orDefault(r.Concurrency, DefaultHousekeepingConcurrency)
	return ctrl.NewControllerManagedBy(mgr).
		Named("housekeeping").
		// Its own status writes do not wake it; a push, a request, a new repository do.
		For(&gitsshv1alpha1.GitProject{}, builder.WithPredicates(predicate.Or[client.Object](
			predicate.GenerationChangedPredicate{}, lastPushTimeChanged, maintenanceRequested, repositoryPathChanged))).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Concurrency}).
		Complete(r)
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

var maintenanceRequested = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	key := gitsshv1alpha1.MaintenanceRequestedAtAnnotation
	return e.ObjectOld.GetAnnotations()[key] != e.ObjectNew.GetAnnotations()[key]
}}

var repositoryPathChanged = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	before, ok := e.ObjectOld.(*gitsshv1alpha1.GitProject)
	after, ok2 := e.ObjectNew.(*gitsshv1alpha1.GitProject)
	return ok && ok2 && before.Status.RepositoryPath != after.Status.RepositoryPath
}}

// Reconcile runs housekeeping on one project's repository when a run is due, and comes
// back when the next one will be.
func (r *HousekeepingReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var project gitsshv1alpha1.GitProject
	if err := r.Client.Get(ctx, req.NamespacedName, &project); err != nil {
		if apierrors.IsNotFound(err) {
			recordMaintenance(req.NamespacedName, nil)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	// Also what a new leader learns of the last leader's runs.
	recordMaintenance(req.NamespacedName, meta.FindStatusCondition(project.Status.Conditions, gitsshv1alpha1.ConditionMaintenance))
	ready := meta.FindStatusCondition(project.Status.Conditions, gitsshv1alpha1.ConditionReady)
	if !project.DeletionTimestamp.IsZero() || project.Status.RepositoryPath == "" ||
		ready == nil || ready.Reason == gitsshv1alpha1.ReasonProjectConflict || ready.Reason == gitsshv1alpha1.ReasonRepositoryError {
		// Not ours, or not there (yet): a status change that sets the path wakes us.
		return ctrl.Result{}, nil
	}
	full, why, wait := r.due(ctx, &project, time.Now())
	if wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	return ctrl.Result{RequeueAfter: r.PushDelay}, r.run(ctx, &project, full, why)
}

// due says whether a run is due now (wait 0), full or not and why, or how long until the
// next one is.
func (r *HousekeepingReconciler) due(ctx context.Context, project *gitsshv1alpha1.GitProject, now time.Time) (full bool, why string, wait time.Duration) {
	var last time.Time
	if project.Status.Repository != nil && project.Status.Repository.LastMaintenanceTime != nil {
		last = project.Status.Repository.LastMaintenanceTime.Time
	}
	if value, ok := project.Annotations[gitsshv1alpha1.MaintenanceRequestedAtAnnotation]; ok {
		requested, err := time.Parse(time.RFC3339, value)
		switch {
		case err != nil:
			log.FromContext(ctx).Info("Ignored a maintenance request that is not a time", "value", value)
			r.Recorder.Eventf(project, nil, corev1.EventTypeWarning, "InvalidMaintenanceRequest", "Maintenance",
				"Annotation %s=%q is not an RFC 3339 time; set it to the current time, e.g. $(date -u +%%Y-%%m-%%dT%%H:%%M:%%SZ)",
				gitsshv1alpha1.MaintenanceRequestedAtAnnotation, value)
		case requested.After(now.Add(time.Minute)):
			// A run would not satisfy it until then: every reconcile would run again.
			log.FromContext(ctx).Info("Ignored a maintenance request in the future", "value", value)
			r.Recorder.Eventf(project, nil, corev1.EventTypeWarning, "InvalidMaintenanceRequest", "Maintenance",
				"Annotation %s=%q is in the future; set it to the current time, e.g. $(date -u +%%Y-%%m-%%dT%%H:%%M:%%SZ)",
				gitsshv1alpha1.MaintenanceRequestedAtAnnotation, value)
		case requested.After(last):
			return true, "requested", 0
		}
	}
	if next := last.Add(r.Interval); !now.Before(next) {
		return true, "scheduled", 0
	}
	wait = last.Add(r.Interval).Sub(now)
	// Times in the status have whole seconds: a push in the second the last run started
	// may not be in it.
	if push := project.Status.LastPushTime; push != nil && !push.Time.Before(last.Truncate(time.Second)) {
		next := last.Add(r.PushDelay)
		if !now.Before(next) {
			return false, "after a push", 0
		}
		wait = min(wait, next.Sub(now))
	}
	return false, "", wait
}

// run runs housekeeping once and records the result in the status, the metrics and, on
// failure, an event.
func (r *HousekeepingReconciler) run(ctx context.Context, project *gitsshv1alpha1.GitProject, full bool, why string) error {
	path := project.Status.RepositoryPath
	kind := "incremental"
	if full {
		kind = "full"
	}
	logger := log.FromContext(ctx).WithValues("path", path, "kind", kind, "reason", why)
	opts := r.Options
	opts.Full = full
	runCtx, cancel := context.WithTimeout(ctx, r.Timeout)
	housekeepingRunning.Inc()
	start := time.Now()
	err := housekeeping.Run(runCtx, path, opts)
	took := time.Since(start)
	housekeepingRunning.Dec()
	timedOut := runCtx.Err() == context.DeadlineExceeded
	cancel()
	if ctx.Err() != nil {
		return ctx.Err() // stopping (lost the lease, shutting down): the next leader runs it
	}
	housekeepingDuration.WithLabelValues(kind).Observe(took.Seconds())

	condition := metav1.Condition{
		Type:    gitsshv1alpha1.ConditionMaintenance,
		Status:  metav1.ConditionTrue,
		Reason:  gitsshv1alpha1.ReasonMaintenanceSucceeded,
		Message: fmt.Sprintf("%s run (%s) took %s", kind, why, took.Round(time.Millisecond)),
	}
	if err != nil {
		step := "other"
		var stepErr *housekeeping.StepError
		if errors.As(err, &stepErr) {
			step = stepErr.Step
		}
		condition.Status, condition.Reason = metav1.ConditionFalse, gitsshv1alpha1.ReasonMaintenanceFailed
		condition.Message = fmt.Sprintf("%s run (%s) failed: %v; run git fsck in the repository to find damage, and see the gitssh logs", kind, why, err)
		if timedOut {
			step = "timeout"
			condition.Reason = gitsshv1alpha1.ReasonMaintenanceTimedOut
			condition.Message = fmt.Sprintf("%s run (%s) was stopped after %s (--housekeeping-timeout); raise the timeout for a repository this large", kind, why, r.Timeout)
		}
		housekeepingRuns.WithLabelValues(kind, "failed").Inc()
		housekeepingFailures.WithLabelValues(step).Inc()
		logger.Error(err, "Failed housekeeping", "step", step, "duration", took)
		r.Recorder.Eventf(project, nil, corev1.EventTypeWarning, gitsshv1alpha1.ReasonMaintenanceFailed, "Maintenance", "%s", condition.Message)
	} else {
		housekeepingRuns.WithLabelValues(kind, "succeeded").Inc()
		logger.Info("Ran housekeeping", "duration", took)
	}

	facts, factsErr := housekeeping.Measure(path)
	size, sizeErr := repostore.DiskUsage(path)
	if err := errors.Join(factsErr, sizeErr); err != nil {
		logger.Error(err, "Failed to measure the repository after housekeeping")
	}
	// The start, not the end: a push during the run is after it, and gets its own run.
	started := metav1.NewTime(start)
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var latest gitsshv1alpha1.GitProject
		if err := r.Client.Get(ctx, client.ObjectKeyFromObject(project), &latest); err != nil {
			return client.IgnoreNotFound(err)
		}
		before := latest.DeepCopy()
		if latest.Status.Repository == nil {
			latest.Status.Repository = &gitsshv1alpha1.RepositoryStatus{}
		}
		repo := latest.Status.Repository
		repo.LastMaintenanceTime = &started
		if factsErr == nil {
			repo.Packs, repo.LooseObjects = int32(facts.Packs), int32(facts.LooseObjects)
		}
		if sizeErr == nil {
			repo.SizeBytes, repo.Size = size, repostore.FormatSize(size)
		}
		condition.ObservedGeneration = latest.Generation
		meta.SetStatusCondition(&latest.Status.Conditions, condition)
		// The lock: GitProjectReconciler writes the same conditions list.
		return r.Client.Status().Patch(ctx, &latest, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
	})
	if err == nil {
		// Not when the write failed: the retry reads the condition again.
		recordMaintenance(client.ObjectKeyFromObject(project), &condition)
	}
	return err
}
