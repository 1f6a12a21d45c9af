package sshserver

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr/testr"
	. "github.com/onsi/gomega"
)

func TestQuotaLimit(t *testing.T) {
	repo := t.TempDir()
	if err := os.WriteFile(filepath.Join(repo, "pack"), make([]byte, 300<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Server{log: testr.New(t)}
	for _, tc := range []struct {
		name  string
		quota int64
		limit int64
		what  string
	}{
		{"no quota", 0, 0, ""},
		{"room left", 1 << 20, 724 << 10, "the remaining 724 KiB of the repository's 1 MiB quota (GitProject spec.quota)"},
		{"one byte left", 300<<10 + 1, 1, "the remaining 1 bytes of the repository's 300 KiB quota (GitProject spec.quota)"},
		{"exactly at the quota", 300 << 10, -1, `repository "acme/api" uses 300 KiB of its 300 KiB quota; ask an admin of the project to raise spec.quota of its GitProject`},
		{"over the quota", 200 << 10, -1, `repository "acme/api" uses 300 KiB of its 200 KiB quota; ask an admin of the project to raise spec.quota of its GitProject`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			limit, what := s.quotaLimit(Repository{Path: repo, Owner: "acme", Name: "api", Quota: tc.quota})
			g.Expect(limit).To(Equal(tc.limit))
			g.Expect(what).To(Equal(tc.what))
		})
	}
}
