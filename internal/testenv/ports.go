package testenv

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, for a server that
// can only be told a port number (a process's flags). Another process may take the port
// before that server binds it (seen on a busy machine): start it with RetryOnAddrInUse.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// RetryOnAddrInUse calls start, which picks its ports with FreePort, starts a server on
// them and returns nil once it serves. A start that failed because one of its ports was
// taken in the meantime is tried again on new ports, three times at most; any other error
// fails the test.
func RetryOnAddrInUse(t testing.TB, start func() error) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		err := start()
		if err == nil {
			return
		}
		if attempt == 3 || !IsAddrInUse(err) {
			t.Fatal(err)
		}
		t.Logf("Starting again on other ports: %v", err)
	}
}

// IsAddrInUse tells whether err says that an address was already in use: a listen in
// this process, or the logs of a process that exited for it.
func IsAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}
