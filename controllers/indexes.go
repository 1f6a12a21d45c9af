package controllers

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
)

// Cache indexes that find the objects competing for one key (by a bucket of its
// fingerprint: keysHolding) or one OWNER/PROJECT, and the deploy keys of one OWNER/PROJECT.
const (
	keyFingerprintIndex = "gitssh.dev/fingerprint"
	projectAddressIndex = "gitssh.dev/owner-project"
	deployProjectIndex  = "gitssh.dev/deploy-project"
)

// SetupIndexes registers the cache indexes the controllers use. Call it once per manager,
// before the controllers are set up. Lists by them name the namespace (client.InNamespace).
func SetupIndexes(ctx context.Context, mgr manager.Manager) error {
	for _, ix := range []struct {
		obj   client.Object
		field string
		value func(client.Object) string
	}{
		{&gitsshv1alpha1.SSHPublicKey{}, keyFingerprintIndex, func(obj client.Object) string {
			return fingerprintBucket(keyFingerprint(obj.(*gitsshv1alpha1.SSHPublicKey)))
		}},
		{&gitsshv1alpha1.SSHPublicKey{}, deployProjectIndex, func(obj client.Object) string {
			return obj.(*gitsshv1alpha1.SSHPublicKey).Spec.Project
		}},
		{&gitsshv1alpha1.GitProject{}, projectAddressIndex, func(obj client.Object) string {
			return projectAddress(obj.(*gitsshv1alpha1.GitProject))
		}},
	} {
		if err := indexInNamespace(ctx, mgr.GetCache(), ix.obj, ix.field, ix.value); err != nil {
			return fmt.Errorf("indexing %s: %w", ix.field, err)
		}
	}
	return nil
}

// indexInNamespace is cache.IndexField for lists within a namespace. IndexField stores
// every value twice, as "NAMESPACE/VALUE" and as "__all_namespaces/VALUE", and with
// 10,000 keys a value costs about 250 bytes (BenchmarkScaleMemory). This stores the first
// only, under the index name and value controller-runtime's cache reader looks up for a
// List with client.InNamespace and client.MatchingFields ("field:" + field). A List by
// field without a namespace finds nothing; the tests would catch a change in that format.
func indexInNamespace(ctx context.Context, c cache.Cache, obj client.Object, field string, value func(client.Object) string) error {
	informer, err := c.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
	if err != nil {
		return err
	}
	return informer.AddIndexers(toolscache.Indexers{"field:" + field: func(raw any) ([]string, error) {
		obj, ok := raw.(client.Object)
		if !ok {
			return nil, fmt.Errorf("object of type %T is not an Object", raw)
		}
		if v := value(obj); v != "" {
			return []string{obj.GetNamespace() + "/" + v}, nil
		}
		return nil, nil
	}})
}

// keyFingerprint is the fingerprint of the object's key, or "" when it does not parse.
// Weak keys keep their fingerprint: two objects with the same weak key still conflict.
func keyFingerprint(key *gitsshv1alpha1.SSHPublicKey) string {
	parsed, _ := parsePublicKey(key.Spec.PublicKey)
	return parsed.Fingerprint
}

// fingerprintBucket is what the fingerprint index holds for a key: the first two characters
// of its SHA256 fingerprint's base64, one of 4,096 buckets, or "" for none. An index costs
// a set per distinct value (about 250 bytes) and almost every key has a fingerprint of its
// own, so indexing whole fingerprints cost 10,000 sets for 10,000 keys; with buckets a
// lookup lists two or three keys at that scale and keeps those that match (keysHolding).
func fingerprintBucket(fingerprint string) string {
	const prefix, bucketLength = "SHA256:", 2
	digest, ok := strings.CutPrefix(fingerprint, prefix)
	if !ok || len(digest) < bucketLength {
		return ""
	}
	return digest[:bucketLength]
}

// keysHolding returns the keys in the cache, in namespace, whose public key has the
// fingerprint, deleting ones included. They are the cache's own objects, not copies
// (copying the bucket would copy the keys then dropped): read them only.
func keysHolding(ctx context.Context, c client.Reader, namespace, fingerprint string) ([]*gitsshv1alpha1.SSHPublicKey, error) {
	bucket := fingerprintBucket(fingerprint)
	if bucket == "" {
		return nil, nil
	}
	var keys gitsshv1alpha1.SSHPublicKeyList
	if err := c.List(ctx, &keys, client.InNamespace(namespace), client.MatchingFields{keyFingerprintIndex: bucket},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	return slices.DeleteFunc(ptrs(keys.Items), func(k *gitsshv1alpha1.SSHPublicKey) bool {
		return keyFingerprint(k) != fingerprint
	}), nil
}

// otherKeysHolding returns a request for every key in the cache, other than self, that holds
// self's public key: the objects whose claim may have changed with self's.
func otherKeysHolding(ctx context.Context, c client.Reader, self *gitsshv1alpha1.SSHPublicKey) []reconcile.Request {
	fingerprint := keyFingerprint(self)
	holders, err := keysHolding(ctx, c, self.Namespace, fingerprint)
	if err != nil {
		log.FromContext(ctx).Error(err, "Failed to list the keys holding a fingerprint", "fingerprint", fingerprint)
		return nil
	}
	var requests []reconcile.Request
	for _, k := range holders {
		if k.Name != self.Name {
			requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(k)})
		}
	}
	return requests
}

func projectAddress(p *gitsshv1alpha1.GitProject) string {
	return p.Spec.Owner + "/" + p.Spec.Project
}

// oldest returns the object that wins a claim among objs: the oldest by creation time, ties
// broken by "namespace/name", as the authorizer decides. Objects being deleted do not
// compete. It returns nil when none compete.
func oldest[T client.Object](objs []T) client.Object {
	return oldestOf(objs, false)
}

// oldestOf is oldest, counting objects being deleted too when includeDeleting.
func oldestOf[T client.Object](objs []T, includeDeleting bool) client.Object {
	var live []T
	for _, obj := range objs {
		if includeDeleting || obj.GetDeletionTimestamp().IsZero() {
			live = append(live, obj)
		}
	}
	if len(live) == 0 {
		return nil
	}
	sort.Slice(live, func(i, j int) bool { return olderThan(live[i], live[j]) })
	return live[0]
}

// olderThan orders claimants as the authorizer does: by creation time, ties broken by
// "namespace/name".
func olderThan(a, b client.Object) bool {
	ta, tb := a.GetCreationTimestamp().Time, b.GetCreationTimestamp().Time
	if !ta.Equal(tb) {
		return ta.Before(tb)
	}
	return client.ObjectKeyFromObject(a).String() < client.ObjectKeyFromObject(b).String()
}

func ptrs[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}

// otherClaimants returns a request for every object in the cache, other than self, whose
// index holds value: the objects whose claim may have changed with self's.
func otherClaimants(ctx context.Context, c client.Client, list client.ObjectList, index, value string, self client.Object) []reconcile.Request {
	return slices.DeleteFunc(indexed(ctx, c, list, index, value, self.GetNamespace()), func(r reconcile.Request) bool {
		return r.NamespacedName == client.ObjectKeyFromObject(self)
	})
}

// indexed returns a request for every object in the cache, in namespace, whose index holds
// value.
func indexed(ctx context.Context, c client.Client, list client.ObjectList, index, value, namespace string) []reconcile.Request {
	if value == "" {
		return nil
	}
	if err := c.List(ctx, list, client.InNamespace(namespace), client.MatchingFields{index: value}); err != nil {
		log.FromContext(ctx).Error(err, "Failed to list indexed objects", "index", index, "value", value)
		return nil
	}
	var requests []reconcile.Request
	_ = meta.EachListItem(list, func(item runtime.Object) error {
		requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(item.(client.Object))})
		return nil
	})
	return requests
}
