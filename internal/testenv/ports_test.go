package testenv

import (
	"errors"
	"fmt"
	"net"
	"testing"
)

// A start on a port someone else took is tried again on another; the third failure, or
// any other error, fails the test.
func TestRetryOnAddrInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = taken.Close() }()

	var attempts int
	var served net.Listener
	RetryOnAddrInUse(t, func() (err error) {
		attempts++
		addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
		if attempts == 1 {
			addr = taken.Addr().String() // as if another process bound it in between
		}
		served, err = net.Listen("tcp", addr)
		return err
	})
	defer func() { _ = served.Close() }()
	if attempts != 2 {
		t.Errorf("started %d times, want 2", attempts)
	}

	for _, tt := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("gitssh exited (exit status 1):\n... listen tcp 127.0.0.1:4242: bind: address already in use"), true},
		{errors.New("gitssh exited (exit status 1): no namespace to watch"), false},
	} {
		if got := IsAddrInUse(tt.err); got != tt.want {
			t.Errorf("IsAddrInUse(%q) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
