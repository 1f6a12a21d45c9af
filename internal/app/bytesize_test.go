package app

import (
	"flag"
	"io"
	"testing"

	. "github.com/onsi/gomega"
)

func TestByteSize(t *testing.T) {
	for _, tt := range []struct {
		arg  string
		want int64
		err  bool
	}{
		{"", 1 << 30, false}, // the default
		{"500Mi", 500 << 20, false},
		{"2Gi", 2 << 30, false},
		{"1G", 1e9, false},
		{"1.5Ki", 1536, false},
		{"4096", 4096, false},
		{"-1", -1, false},
		{"0", 0, false},
		{"1.5", 0, true},
		{"lots", 0, true},
		{"1GB", 0, true},
	} {
		t.Run(tt.arg, func(t *testing.T) {
			g := NewWithT(t)
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var v int64
			fs.TextVar((*ByteSize)(&v), "size", ByteSize(1<<30), "")
			g.Expect(fs.Lookup("size").DefValue).To(Equal("1Gi"))
			var args []string
			if tt.arg != "" {
				args = []string{"--size=" + tt.arg}
			}
			err := fs.Parse(args)
			if tt.err {
				g.Expect(err).To(MatchError(ContainSubstring("is not a number of bytes")))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(v).To(Equal(tt.want))
		})
	}
}
