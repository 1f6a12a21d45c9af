package repostore

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	. "github.com/onsi/gomega"
)

func TestDiskUsageSumsRegularFilesAndFollowsNoLinks(t *testing.T) {
	g := NewWithT(t)
	repo := filepath.Join(t.TempDir(), "api.git")
	for name, size := range map[string]int{"HEAD": 21, "objects/pack/pack-1.pack": 5000, "objects/pack/pack-1.idx": 1100, "objects/ab/cdef": 77, "refs/heads/main": 41} {
		p := filepath.Join(repo, name)
		g.Expect(os.MkdirAll(filepath.Dir(p), 0o755)).To(Succeed())
		g.Expect(os.WriteFile(p, make([]byte, size), 0o644)).To(Succeed())
	}
	outside := t.TempDir()
	g.Expect(os.WriteFile(filepath.Join(outside, "big"), make([]byte, 1<<20), 0o644)).To(Succeed())
	g.Expect(os.Symlink(filepath.Join(outside, "big"), filepath.Join(repo, "objects", "link-to-file"))).To(Succeed())
	g.Expect(os.Symlink(outside, filepath.Join(repo, "objects", "link-to-dir"))).To(Succeed())

	g.Expect(DiskUsage(repo)).To(Equal(int64(21 + 5000 + 1100 + 77 + 41)))

	_, err := DiskUsage(filepath.Join(t.TempDir(), "missing.git"))
	g.Expect(err).To(MatchError(ContainSubstring("missing.git")))
}

// git deletes files while a repository is measured (a push's quarantine, git gc): such
// files are skipped, not an error.
func TestDiskUsageSkipsFilesThatVanish(t *testing.T) {
	g := NewWithT(t)
	repo := t.TempDir()
	stop := make(chan struct{})
	var churn sync.WaitGroup
	churn.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			dir := filepath.Join(repo, "objects", fmt.Sprintf("incoming-%d", i%4))
			_ = os.MkdirAll(dir, 0o755)
			for j := range 20 {
				_ = os.WriteFile(filepath.Join(dir, fmt.Sprint(j)), []byte("x"), 0o644)
			}
			_ = os.RemoveAll(dir)
		}
	})
	defer func() { close(stop); churn.Wait() }()
	for range 500 {
		_, err := DiskUsage(repo)
		g.Expect(err).NotTo(HaveOccurred())
	}
}

func TestFormatSize(t *testing.T) {
	for _, tc := range []struct {
		bytes int64
		want  string
	}{
		{0, "0 bytes"},
		{1023, "1023 bytes"},
		{1024, "1 KiB"},
		{1536, "1.5 KiB"},
		{200 << 20, "200 MiB"},
		{1 << 30, "1 GiB"},
		{1288490189, "1.2 GiB"},
		{2<<30 + 1, "2 GiB"},
		{1000000, "976.6 KiB"},
		{5 << 60, "5 EiB"},
		{3 << 40, "3 TiB"},
		{1 << 62, "4 EiB"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			NewWithT(t).Expect(FormatSize(tc.bytes)).To(Equal(tc.want))
		})
	}
}

// BenchmarkDiskUsage measures a repository of 100,000 loose objects in 256 directories,
// the worst case of an unpacked repository: go test -run '^$' -bench DiskUsage ./internal/repostore/
func BenchmarkDiskUsage(b *testing.B) {
	repo := b.TempDir()
	for i := range 100_000 {
		dir := filepath.Join(repo, "objects", fmt.Sprintf("%02x", i%256))
		if i < 256 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%038x", i)), []byte("x"), 0o444); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if n, err := DiskUsage(repo); err != nil || n != 100_000 {
			b.Fatal(n, err)
		}
	}
}
