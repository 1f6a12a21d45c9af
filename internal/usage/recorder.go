// Package usage records when keys and projects were last used, in their status, without
// letting the write load grow with logins.
//
// The SSH server reports every login, refused key, push and fetch; the Recorder keeps only
// the latest time per object and field in memory, and a flusher writes each object at most
// once per interval, and only when the time has moved past the stored one by at least the
// interval (the way kube-apiserver tracks legacy service account tokens). Times are written
// with an optimistic lock, so a replica with an older time never lowers a newer one written
// by another replica. When the API server is away, the latest times wait in memory (one
// entry per object) and are written when it is back; the SSH path never waits.
package usage

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/internal/authorizer"
)

// +kubebuilder:rbac:groups=gitssh.dev,resources=sshpublickeys/status;gitprojects/status,verbs=get;patch

// FieldManager is the field manager of the usage status patches.
const FieldManager = "gitssh-usage"

// DefaultFlushInterval is how often, at most, one object's usage is written.
const DefaultFlushInterval = time.Minute

// shutdownFlushTimeout bounds the last flush when the process stops.
const shutdownFlushTimeout = 5 * time.Second

// field is one usage time in a status.
type field int

const (
	keyLastUsed field = iota
	keyLastFailed
	projectLastPush
	projectLastFetch
)

func (f field) String() string {
	return [...]string{"lastUsedTime", "lastFailedTime", "lastPushTime", "lastFetchTime"}[f]
}

// object is one SSHPublicKey (key) or GitProject.
type object struct {
	key bool
	ref types.NamespacedName
}

// Recorder implements sshserver.Recorder and writes the times as status patches.
type Recorder struct {
	// Client patches the status subresource; reads go to Reader.
	Client client.Client
	// Reader is where stored times are read before a patch: the manager's cache, so that
	// an up-to-date object costs no API call.
	Reader client.Reader
	// APIReader reads the object again after a conflict; uncached.
	APIReader client.Reader
	// Events receives a Warning when a key is refused; at most one per key per flush.
	Events events.EventRecorder
	// Interval is the flush interval and the granularity of the times. Default 1 minute.
	Interval time.Duration
	Log      logr.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	mu      sync.Mutex
	pending map[object]map[field]time.Time
}

// LoginSucceeded records a verified login of the identity's key, or counts a certificate
// login, which has no object.
func (r *Recorder) LoginSucceeded(id authorizer.Identity) {
	if id.CA != "" {
		certificateLogins.WithLabelValues(id.CA).Inc()
		return
	}
	r.record(keyObject(id), keyLastUsed)
}

// KeyRefused records a registered key offered but not proven, offered after it expired,
// or refused a repository.
func (r *Recorder) KeyRefused(id authorizer.Identity) { r.record(keyObject(id), keyLastFailed) }

// Pushed records a successful git-receive-pack.
func (r *Recorder) Pushed(repo authorizer.Repository) { r.record(projectObject(repo), projectLastPush) }

// Fetched records a successful git-upload-pack or git-upload-archive.
func (r *Recorder) Fetched(repo authorizer.Repository) {
	r.record(projectObject(repo), projectLastFetch)
}

func keyObject(id authorizer.Identity) object {
	return object{key: true, ref: types.NamespacedName{Namespace: id.Key.Namespace, Name: id.Key.Name}}
}

func projectObject(repo authorizer.Repository) object {
	return object{ref: types.NamespacedName{Namespace: repo.Project.Namespace, Name: repo.Project.Name}}
}

// record is on the SSH path: a map update under a short lock, nothing else.
func (r *Recorder) record(obj object, f field) {
	if obj.ref.Name == "" {
		return
	}
	eventsRecorded.WithLabelValues(f.String()).Inc()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.raise(obj, f, r.now())
}

// raise makes t the pending time of obj's field unless a later one is pending. Callers
// hold r.mu.
func (r *Recorder) raise(obj object, f field, t time.Time) {
	if r.pending == nil {
		r.pending = map[object]map[field]time.Time{}
	}
	fields := r.pending[obj]
	if fields == nil {
		fields = map[field]time.Time{}
		r.pending[obj] = fields
		pendingObjects.Inc()
	}
	if t.After(fields[f]) {
		fields[f] = t
	}
}

func (r *Recorder) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Recorder) interval() time.Duration {
	if r.Interval > 0 {
		return r.Interval
	}
	return DefaultFlushInterval
}

// NeedLeaderElection is false: every replica records its own logins.
func (r *Recorder) NeedLeaderElection() bool { return false }

// Start flushes every interval until ctx ends, then once more within a bounded time. After
// a failed flush it retries sooner, backing off from one second up to the interval.
func (r *Recorder) Start(ctx context.Context) error {
	backoff := time.Duration(0)
	for {
		wait := r.interval()
		if backoff > 0 {
			wait = backoff
		}
		select {
		case <-ctx.Done():
			flushCtx, cancel := context.WithTimeout(context.Background(), shutdownFlushTimeout)
			defer cancel()
			if failed := r.Flush(flushCtx); failed > 0 {
				r.Log.Info("Dropped usage times that could not be written before shutdown", "objects", failed)
			}
			return nil
		case <-time.After(wait):
		}
		if failed := r.Flush(ctx); failed > 0 {
			backoff = min(max(2*backoff, time.Second), r.interval())
		} else {
			backoff = 0
		}
	}
}

// Flush writes the pending times, one patch per object at most, and returns how many
// objects could not be written (they stay pending).
func (r *Recorder) Flush(ctx context.Context) (failed int) {
	r.mu.Lock()
	batch := r.pending
	r.pending = nil
	r.mu.Unlock()
	pendingObjects.Sub(float64(len(batch)))

	for obj, times := range batch {
		if err := r.write(ctx, obj, times); err != nil {
			failed++
			patchFailures.Inc()
			r.Log.V(1).Info("Could not write usage; will retry", "object", obj.ref.String(), "error", err.Error())
			r.requeue(obj, times)
		}
	}
	return failed
}

// requeue puts times back, unless newer ones arrived meanwhile.
func (r *Recorder) requeue(obj object, times map[field]time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for f, t := range times {
		r.raise(obj, f, t)
	}
}

// write patches one object's times where they are later than the stored ones by at least
// the interval. A conflict (someone else wrote meanwhile) re-reads and decides again; a
// deleted object is dropped quietly.
func (r *Recorder) write(ctx context.Context, obj object, times map[field]time.Time) error {
	reader := r.Reader
	for attempt := 0; attempt < 3; attempt++ {
		current, err := r.get(ctx, reader, obj)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		updated := current.DeepCopyObject().(client.Object)
		changed := r.apply(updated, times)
		if len(changed) == 0 {
			return nil
		}
		patch := client.MergeFromWithOptions(current, client.MergeFromWithOptimisticLock{})
		err = r.Client.Status().Patch(ctx, updated, patch, client.FieldOwner(FieldManager))
		switch {
		case err == nil:
			patchesSent.Inc()
			r.announce(updated, changed)
			return nil
		case apierrors.IsNotFound(err):
			return nil
		case apierrors.IsConflict(err):
			reader = r.APIReader // the cache was behind; ask the API server itself
			continue
		default:
			return err
		}
	}
	return fmt.Errorf("status of %s kept changing under three attempts", obj.ref)
}

func (r *Recorder) get(ctx context.Context, reader client.Reader, obj object) (client.Object, error) {
	var o client.Object = &gitsshv1alpha1.GitProject{}
	if obj.key {
		o = &gitsshv1alpha1.SSHPublicKey{}
	}
	return o, reader.Get(ctx, obj.ref, o)
}

// apply sets each time that moves the stored one forward by at least the interval, and
// returns the fields it set. A stored time is never lowered.
func (r *Recorder) apply(o client.Object, times map[field]time.Time) []field {
	var changed []field
	for f, t := range times {
		stored := r.slot(o, f)
		if *stored != nil && t.Sub((*stored).Time) < r.interval() {
			continue
		}
		*stored = &metav1.Time{Time: t.Truncate(time.Second)}
		changed = append(changed, f)
	}
	return changed
}

func (r *Recorder) slot(o client.Object, f field) **metav1.Time {
	switch f {
	case keyLastUsed:
		return &o.(*gitsshv1alpha1.SSHPublicKey).Status.LastUsedTime
	case keyLastFailed:
		return &o.(*gitsshv1alpha1.SSHPublicKey).Status.LastFailedTime
	case projectLastPush:
		return &o.(*gitsshv1alpha1.GitProject).Status.LastPushTime
	default:
		return &o.(*gitsshv1alpha1.GitProject).Status.LastFetchTime
	}
}

// announce emits the Warning for a refused key once it is written: as rate-limited as the
// writes themselves.
func (r *Recorder) announce(o client.Object, changed []field) {
	for _, f := range changed {
		if f == keyLastFailed && r.Events != nil {
			key := o.(*gitsshv1alpha1.SSHPublicKey)
			// A deploy key has no user: its project says whose it is.
			whose := fmt.Sprintf("Key %s of user %q", key.Status.Fingerprint, key.Spec.User)
			if key.Spec.Project != "" {
				whose = fmt.Sprintf("Deploy key %s of project %q", key.Status.Fingerprint, key.Spec.Project)
			}
			r.Events.Eventf(key, nil, corev1.EventTypeWarning, "KeyRefused", "Authenticate",
				"%s was offered without proof of the private key, offered after it expired, or refused a repository; if its owner did not try to log in, someone else holds the public key",
				whose)
		}
	}
}
