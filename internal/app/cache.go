package app

import (
	"unique"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
)

// lastAppliedAnnotation is where `kubectl apply` (client-side) keeps the whole object it
// applied, as JSON.
const lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

// stripForCache is the cache's transform for every object: it drops what no controller
// reads and what makes up most of an applied object, its managedFields and kubectl's
// last-applied-configuration. With 10,000 keys and 2,000 projects applied server-side
// that is about half of the cache (BenchmarkScaleMemory).
//
// It is safe because the controllers write with merge patches computed between two
// copies of a cached object (neither has the fields, so the patch does not touch them)
// and with server-side apply of objects built from scratch, never with an Update of a
// cached object.
//
// It also makes the objects share the strings that thousands of them hold alike (the
// namespace, condition types, statuses and reasons, users, owners, key types, a recently
// used key's Stale message): decoded, each object has a copy of its own. Messages that
// name the object are left alone: an interned string costs an entry in unique's map too.
func stripForCache(in any) (any, error) {
	obj, err := meta.Accessor(in)
	if err != nil {
		return in, nil // not an object (a tombstone): nothing to strip
	}
	// Only set when present: setting nil on an object without managedFields is what
	// kubernetes/kubernetes#124337 trips on.
	if obj.GetManagedFields() != nil {
		obj.SetManagedFields(nil)
	}
	if a := obj.GetAnnotations(); a != nil {
		if _, ok := a[lastAppliedAnnotation]; ok {
			delete(a, lastAppliedAnnotation)
			if len(a) == 0 {
				a = nil
			}
			obj.SetAnnotations(a)
		}
	}
	obj.SetNamespace(unique.Make(obj.GetNamespace()).Value())
	switch o := in.(type) {
	case *gitsshv1alpha1.SSHPublicKey:
		intern(&o.Spec.User)
		intern(&o.Spec.Project)
		intern(&o.Spec.Access)
		intern(&o.Status.KeyType)
		internConditions(o.Status.Conditions)
		// A recently used key's Stale message depends on --stale-key-after only.
		if c := meta.FindStatusCondition(o.Status.Conditions, gitsshv1alpha1.ConditionStale); c != nil && c.Status == metav1.ConditionFalse {
			intern(&c.Message)
		}
	case *gitsshv1alpha1.GitProject:
		intern(&o.Spec.Owner)
		intern(&o.Spec.Visibility)
		intern(&o.Spec.DefaultBranch)
		intern(&o.Spec.DeletionPolicy)
		for i := range o.Spec.Members {
			intern(&o.Spec.Members[i].User)
			intern(&o.Spec.Members[i].Role)
		}
		internConditions(o.Status.Conditions)
	}
	return in, nil
}

// intern replaces *s with the one copy of its value that the process keeps.
func intern[T ~string](s *T) { *s = unique.Make(*s).Value() }

func internConditions(conditions []metav1.Condition) {
	for i := range conditions {
		c := &conditions[i]
		intern(&c.Type)
		intern(&c.Status)
		intern(&c.Reason)
	}
}
