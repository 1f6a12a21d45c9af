package usage_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitssh-dev/gitssh/internal/authorizer"
	"github.com/gitssh-dev/gitssh/sshserver"
)

// Run with:
//
//	KUBEBUILDER_ASSETS=$(hack/setup-envtest.sh) go test -run '^$' -bench . -benchtime 2000x ./internal/usage/

// BenchmarkLogins: logins per second through the full SSH path (Go client, real server on
// 127.0.0.1), with the usage recorder on and off.
func BenchmarkLogins(b *testing.B) {
	ns := env.Namespace(b)
	authz := authorizer.New()
	keys := createKeys(b, ns, 10, authz)
	for _, mode := range []string{"recorder=off", "recorder=on"} {
		b.Run(mode, func(b *testing.B) {
			var rec sshserver.Recorder = sshserver.NopRecorder{}
			if mode == "recorder=on" {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				r := newRecorder(env.Client, time.Second)
				go func() { _ = r.Start(ctx) }()
				rec = r
			}
			addr := serve(b, authz, rec)
			var next atomic.Int64
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := login(addr, keys[next.Add(1)%int64(len(keys))].signer); err != nil {
						b.Error(err)
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
		})
	}
}

// BenchmarkAPIWrites: status patches per minute at a given login rate, with a 1s flush
// interval (the default is 1m: divide the rate of writes by 60), 10 keys, 10s per rate.
func BenchmarkAPIWrites(b *testing.B) {
	ns := env.Namespace(b)
	authz := authorizer.New()
	keys := createKeys(b, ns, 10, authz)
	for _, rate := range []int{10, 100, 0} {
		name := fmt.Sprintf("logins-per-s=%d", rate)
		if rate == 0 {
			name = "logins-per-s=max"
		}
		b.Run(name, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			counting := &countingClient{Client: env.Client}
			r := newRecorder(counting, time.Second)
			go func() { _ = r.Start(ctx) }()
			addr := serve(b, authz, r)
			const duration = 10 * time.Second
			deadline := time.Now().Add(duration)
			var logins atomic.Int64
			var wg sync.WaitGroup
			workers := 4
			for w := range workers {
				wg.Go(func() {
					for i := 0; time.Now().Before(deadline); i++ {
						start := time.Now()
						if err := login(addr, keys[(w+i)%len(keys)].signer); err == nil {
							logins.Add(1)
						}
						if rate > 0 {
							time.Sleep(time.Duration(workers)*time.Second/time.Duration(rate) - time.Since(start))
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(logins.Load())/duration.Seconds(), "logins/s")
			b.ReportMetric(float64(counting.patches.Load())*60/duration.Seconds(), "patches/min")
		})
	}
}
