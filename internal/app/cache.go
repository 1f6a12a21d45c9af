package app

import (
	"k8s.io/apimachinery/pkg/api/meta"
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
	return in, nil
}
