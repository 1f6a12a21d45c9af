package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
)

// recordReadyTransition emits an event and a log line when the Ready condition changed
// status or reason: Warning when it is not True.
func recordReadyTransition(ctx context.Context, recorder events.EventRecorder, obj client.Object, action string, previous *metav1.Condition, ready metav1.Condition, logKeysAndValues ...any) {
	if previous != nil && previous.Status == ready.Status && previous.Reason == ready.Reason {
		return
	}
	eventType := corev1.EventTypeNormal
	if ready.Status != metav1.ConditionTrue || ready.Reason == gitsshv1alpha1.ReasonExpiringSoon {
		eventType = corev1.EventTypeWarning
	}
	recorder.Eventf(obj, nil, eventType, ready.Reason, action, "%s", ready.Message)
	log.FromContext(ctx).Info("Updated status", append([]any{"ready", ready.Status, "reason", ready.Reason}, logKeysAndValues...)...)
}

// recordQuotaTransition emits a Warning when a project goes over its quota, so pushes start
// being refused, and a Normal event when it is back within. Getting a quota is no event:
// only what changes for pushers is.
func recordQuotaTransition(ctx context.Context, recorder events.EventRecorder, project *gitsshv1alpha1.GitProject, previous *metav1.Condition) {
	current := meta.FindStatusCondition(project.Status.Conditions, gitsshv1alpha1.ConditionWithinQuota)
	wasOver, isOver := hadStatus(previous, current, metav1.ConditionFalse)
	switch {
	case isOver && !wasOver:
		recorder.Eventf(project, nil, corev1.EventTypeWarning, current.Reason, "Measure", "%s", current.Message)
	case wasOver && !isOver:
		message := "no quota any more; pushes are accepted again"
		if current != nil {
			message = current.Message + "; pushes are accepted again"
		}
		recorder.Eventf(project, nil, corev1.EventTypeNormal, gitsshv1alpha1.ReasonWithinQuota, "Measure", "%s", message)
	default:
		return
	}
	log.FromContext(ctx).Info("Updated quota status", "overQuota", isOver, "repository", project.Status.Repository)
}

// recordStaleTransition emits a Warning when a key turns stale, and a Normal event when a
// stale key logs in again. A key that was never stale is no event.
func recordStaleTransition(ctx context.Context, recorder events.EventRecorder, key *gitsshv1alpha1.SSHPublicKey, previous *metav1.Condition) {
	current := meta.FindStatusCondition(key.Status.Conditions, gitsshv1alpha1.ConditionStale)
	wasStale, isStale := hadStatus(previous, current, metav1.ConditionTrue)
	switch {
	case isStale && !wasStale:
		recorder.Eventf(key, nil, corev1.EventTypeWarning, current.Reason, "Register", "%s", current.Message)
	case wasStale && current != nil && !isStale:
		recorder.Eventf(key, nil, corev1.EventTypeNormal, current.Reason, "Register", "%s", current.Message)
	default:
		return
	}
	log.FromContext(ctx).Info("Updated stale status", "stale", isStale)
}

// hadStatus says whether the previous and the current condition (either may be missing)
// had the status.
func hadStatus(previous, current *metav1.Condition, status metav1.ConditionStatus) (before, now bool) {
	return previous != nil && previous.Status == status, current != nil && current.Status == status
}

func falseCondition(reason, message string) metav1.Condition {
	return metav1.Condition{Type: gitsshv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: reason, Message: message}
}
