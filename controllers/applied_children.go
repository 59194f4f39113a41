package controllers

import (
	"crypto/sha256"
	"encoding/json"
	"sync"
	"sync/atomic"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/lru"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// maxAppliedChildren bounds the remembered children: about ten per
// program, for twice the programs the operator is measured with
// (docs/scale-out.md).
const maxAppliedChildren = 100_000

// appliedChildren remembers, for each child object, the last declaration
// found already in force and the resourceVersion of the child it was
// found in. Comparing a declaration with the child converts both to
// unstructured maps, which was a sixth of the operator's CPU with 1,000
// programs tuning every minute; a JSON digest of the declaration costs a
// tenth of that. The answer is the same as comparing afresh: the child at
// an unchanged resourceVersion is the object that was compared, and a
// changed declaration has another digest. An edit by anyone, a deletion
// or a re-creation gives the child another resourceVersion and so a
// fresh comparison. The zero value is ready to use.
type appliedChildren struct {
	once sync.Once
	seen *lru.Cache // childKey -> appliedChild
	// hits counts the comparisons spared.
	hits atomic.Int64
}

// childKey names a child: its kind, namespace and name.
type childKey struct {
	gvk schema.GroupVersionKind
	key client.ObjectKey
}

// appliedChild is a declaration (the digest of the desired object, owner
// reference included) and the resourceVersion of the child it was found
// in force in.
type appliedChild struct {
	resourceVersion string
	declaration     [sha256.Size]byte
}

// declaredAt is desired's declaration, judged against a child at
// resourceVersion.
func declaredAt(desired client.Object, resourceVersion string) (appliedChild, error) {
	// encoding/json writes map keys sorted, so equal objects have equal
	// digests.
	data, err := json.Marshal(desired)
	if err != nil {
		return appliedChild{}, err
	}
	return appliedChild{resourceVersion: resourceVersion, declaration: sha256.Sum256(data)}, nil
}

func (c *appliedChildren) cache() *lru.Cache {
	c.once.Do(func() { c.seen = lru.New(maxAppliedChildren) })
	return c.seen
}

// unchanged says whether declared was found in force in the child at
// the same resourceVersion.
func (c *appliedChildren) unchanged(gvk schema.GroupVersionKind, key client.ObjectKey, declared appliedChild) bool {
	if declared.resourceVersion == "" {
		return false
	}
	v, ok := c.cache().Get(childKey{gvk, key})
	if ok && v.(appliedChild) == declared {
		c.hits.Add(1)
		return true
	}
	return false
}

// remember notes that declared is in force in the child.
func (c *appliedChildren) remember(gvk schema.GroupVersionKind, key client.ObjectKey, declared appliedChild) {
	if declared.resourceVersion != "" {
		c.cache().Add(childKey{gvk, key}, declared)
	}
}

// len is how many children are remembered.
func (c *appliedChildren) len() int {
	return c.cache().Len()
}
