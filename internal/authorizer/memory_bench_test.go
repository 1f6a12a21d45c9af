package authorizer

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// BenchmarkMemory reports what the Authorizer holds per key and per project, with
// 10,000 keys and 2,000 projects fed as the feeders feed them (names and users the
// caller keeps anyway, fingerprints the authorizer's own):
//
//	go test -run '^$' -bench Memory -benchtime 1x ./internal/authorizer/
func BenchmarkMemory(b *testing.B) {
	const keys, projects = 10000, 2000
	names := make([]string, keys)
	fingerprints := make([]string, keys)
	for i := range keys {
		names[i] = fmt.Sprintf("key-%05d", i)
		fingerprints[i] = fmt.Sprintf("SHA256:%043d", i)
	}
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for range b.N {
		before := heap()
		a := New()
		for i := range keys {
			a.SetKey(ObjectRef{"ns", names[i]}, Key{Fingerprint: fingerprints[i], User: "user", Created: created})
		}
		withKeys := heap()
		for i := range projects {
			a.SetProject(ObjectRef{"ns", names[i]}, Project{Owner: "owner", Name: names[i],
				Members: map[string]Role{"member": RoleWrite}, RepositoryPath: "/repos/" + names[i], Created: created})
		}
		after := heap()
		b.ReportMetric(float64(withKeys-before)/keys, "B/key")
		b.ReportMetric(float64(after-withKeys)/projects, "B/project")
		runtime.KeepAlive(a)
	}
}
