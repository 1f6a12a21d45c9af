package sshserver

import (
	"bytes"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
)

// The abort line after the busy message is dropped, whatever the writes'
// sizes; everything else passes as it came, pkt-lines or not.
func TestBusyAbortFilter(t *testing.T) {
	abort := pkt("\x03aborting due to possible repository corruption on the remote side.\x00")
	busy := pkt("\x02gitssh: the server is busy: it runs at most 1 clones\n")
	data := pkt("\x01" + strings.Repeat("p", 2000)) // pack data: larger than heldPktMax
	head := pkt("packfile\n") + pkt("\x02Enumerating objects: 5\n")
	for _, tc := range []struct {
		name, in, want string
	}{
		{"busy, then the abort", head + busy + abort, head + busy},
		{"the abort alone (a real failure)", head + data + abort + "0000", head + data + abort + "0000"},
		{"the abort before the busy message", head + abort + busy, head + abort + busy},
		{"pack data, flush, delim", head + data + "0001" + data + "0000", head + data + "0001" + data + "0000"},
		{"not pkt-lines after a while", head + "PACK\x00\x00\x00\x02" + busy + abort, head + "PACK\x00\x00\x00\x02" + busy + abort},
	} {
		for _, size := range []int{1, 2, 3, 5, 7, 64, 1 << 20} {
			t.Run(fmt.Sprintf("%s, writes of %d", tc.name, size), func(t *testing.T) {
				var out bytes.Buffer
				f := &busyAbortFilter{w: &out, busy: new(atomic.Bool)}
				for rest := tc.in; rest != ""; {
					n := min(size, len(rest))
					if m, err := f.Write([]byte(rest[:n])); err != nil || m != n {
						t.Fatalf("Write = %d, %v; want %d, nil", m, err, n)
					}
					rest = rest[n:]
				}
				if out.String() != tc.want {
					t.Errorf("got  %q\nwant %q", out.String(), tc.want)
				}
			})
		}
	}
}

// upload-pack's stderr lines about the failed pack-objects are held, and
// dropped if the busy message comes, else passed on at the end.
func TestBusyAbortStderr(t *testing.T) {
	lines := "error: git upload-pack: git-pack-objects died with error.\nfatal: git upload-pack: aborting due to possible repository corruption on the remote side.\n"
	for _, busy := range []bool{true, false} {
		var out bytes.Buffer
		f := &busyAbortStderr{w: &out, busy: new(atomic.Bool)}
		f.Write([]byte("warning: something else\n" + lines))
		f.busy.Store(busy)
		f.finish()
		want := "warning: something else\n"
		if !busy {
			want += lines
		}
		if out.String() != want {
			t.Errorf("busy %v: got %q, want %q", busy, out.String(), want)
		}
	}
}
