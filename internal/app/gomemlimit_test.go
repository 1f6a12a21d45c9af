package app

import (
	"runtime"
	"runtime/debug"
	"testing"

	. "github.com/onsi/gomega"
)

// Go's soft limit and git's delta windows, each at its most, fit in the pod's limit together.
func TestGoMemoryLimitLeavesGitItsHalf(t *testing.T) {
	for _, tc := range []struct {
		cpus  float64
		limit int64
		packs int
		want  int64
	}{
		{2, 1 << 30, 0, 512 << 20}, // the chart's default limit
		{1, 128 << 20, 1, 64 << 20},
		{4, 4 << 30, 16, 2 << 30},
	} {
		g := NewWithT(t)
		g.Expect(goMemoryLimit(tc.limit)).To(Equal(tc.want))
		opts := Options{CPULimit: tc.cpus, MemoryLimit: tc.limit}
		opts.SSH.MaxUploadPacks = tc.packs
		threads, window := packSettings(opts)
		packs := int64(tc.packs)
		if packs == 0 {
			packs = 2 * int64(runtime.GOMAXPROCS(0)) // sshserver's default
		}
		packs++ // and one housekeeping run
		g.Expect(goMemoryLimit(tc.limit)+packs*int64(threads)*window).To(BeNumerically("<=", tc.limit), "%+v", tc)
	}
}

func TestSetGoMemoryLimit(t *testing.T) {
	g := NewWithT(t)
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })

	t.Setenv("GOMEMLIMIT", "")
	g.Expect(setGoMemoryLimit(1 << 30)).To(Equal("512Mi"))
	g.Expect(debug.SetMemoryLimit(-1)).To(BeEquivalentTo(512 << 20))
	g.Expect(setGoMemoryLimit(0)).To(Equal("512Mi"), "an unknown pod limit changes nothing")

	// Go applied GOMEMLIMIT itself at start; --memory-limit does not override it.
	t.Setenv("GOMEMLIMIT", "300MiB")
	debug.SetMemoryLimit(300 << 20)
	g.Expect(setGoMemoryLimit(1 << 30)).To(Equal("300Mi"))
	g.Expect(debug.SetMemoryLimit(-1)).To(BeEquivalentTo(300 << 20))
}
