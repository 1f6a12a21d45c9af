package controllers

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
)

// When a run is due, of which kind, and otherwise how long until the next one.
func TestHousekeepingDue(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(-d)} }
	for _, tc := range []struct {
		name        string
		last, push  *metav1.Time
		requestedAt string
		full        bool
		why         string
		wait        time.Duration
	}{
		{name: "never maintained", full: true, why: "scheduled"},
		{name: "interval passed", last: ago(25 * time.Hour), full: true, why: "scheduled"},
		{name: "nothing to do", last: ago(time.Hour), wait: 23 * time.Hour},
		{name: "a push, the delay passed", last: ago(time.Hour), push: ago(time.Minute), why: "after a push"},
		{name: "a push, within the delay", last: ago(2 * time.Minute), push: ago(time.Minute), wait: 3 * time.Minute},
		{name: "a push in the second the run started", last: &metav1.Time{Time: now.Add(-10*time.Minute + 300*time.Millisecond)}, push: ago(10 * time.Minute), why: "after a push"},
		{name: "a push before the last run", last: ago(time.Hour), push: ago(2 * time.Hour), wait: 23 * time.Hour},
		{name: "requested", last: ago(time.Hour), requestedAt: now.Add(-time.Minute).Format(time.RFC3339), full: true, why: "requested"},
		{name: "request served", last: ago(time.Minute), requestedAt: now.Add(-time.Hour).Format(time.RFC3339), wait: 24*time.Hour - time.Minute},
		{name: "request in the future", last: ago(time.Hour), requestedAt: now.Add(time.Hour).Format(time.RFC3339), wait: 23 * time.Hour},
		{name: "request not a time", last: ago(time.Hour), requestedAt: "now", wait: 23 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &HousekeepingReconciler{Recorder: events.NewFakeRecorder(10), Interval: 24 * time.Hour, PushDelay: 5 * time.Minute}
			project := &gitsshv1alpha1.GitProject{}
			project.Status.LastPushTime = tc.push
			if tc.last != nil {
				project.Status.Repository = &gitsshv1alpha1.RepositoryStatus{LastMaintenanceTime: tc.last}
			}
			if tc.requestedAt != "" {
				project.Annotations = map[string]string{gitsshv1alpha1.MaintenanceRequestedAtAnnotation: tc.requestedAt}
			}
			full, why, wait := r.due(context.Background(), project, now)
			if full != tc.full || why != tc.why || wait != tc.wait {
				t.Errorf("due() = %v, %q, %s; want %v, %q, %s", full, why, wait, tc.full, tc.why, tc.wait)
			}
		})
	}
}
