package sshserver

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// login dials addr, sends header (if any) and logs in as user with x/crypto's
// client; it returns how long that took.
func (e *env) login(user string, header []byte) (time.Duration, error) {
	cb, err := knownHostsCallback(e.known)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	nc, err := net.DialTimeout("tcp", e.addr, 20*time.Second)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	nc.SetDeadline(start.Add(20 * time.Second))
	if _, err := nc.Write(header); err != nil {
		return 0, err
	}
	c, chans, reqs, err := ssh.NewClientConn(nc, e.addr, &ssh.ClientConfig{User: "git", Auth: []ssh.AuthMethod{ssh.PublicKeys(e.signer(user))}, HostKeyCallback: cb})
	if err != nil {
		return 0, err
	}
	d := time.Since(start)
	go ssh.DiscardRequests(reqs)
	go func() {
		for ch := range chans {
			ch.Reject(ssh.Prohibited, "")
		}
	}()
	c.Close()
	return d, nil
}

func p99(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[(len(ds)*99)/100]
}

// BenchmarkProxyProtocolCost measures what reading a PROXY header costs a
// login (TCP, key exchange, public-key authentication with x/crypto's
// client, one at a time): three servers, off and required with a v1 or v2
// header, and each iteration logs in once on each, in turn, so that the
// machine's noise falls on all three alike. Reported per mode: logins/s (from
// the mean) and p99 in ms, and each mode's mean over off's.
//
//	go test -run '^$' -bench ProxyProtocolCost -benchtime 2000x ./sshserver/
func BenchmarkProxyProtocolCost(b *testing.B) {
	trusted := CIDRs{netip.MustParsePrefix("127.0.0.0/8")}
	modes := []struct {
		name   string
		cfg    Config
		header []byte
	}{
		{"off", Config{}, nil},
		{"v1", Config{ProxyProtocol: ProxyProtocolRequired, ProxyProtocolTrustedCIDRs: trusted}, proxyHeader(b, 1, "203.0.113.7")},
		{"v2", Config{ProxyProtocol: ProxyProtocolRequired, ProxyProtocolTrustedCIDRs: trusted}, proxyHeader(b, 2, "203.0.113.7")},
	}
	envs := make([]*env, len(modes))
	times := make([][]time.Duration, len(modes))
	for i, m := range modes {
		envs[i] = newEnv(b, m.cfg)
	}
	i := 0
	for b.Loop() {
		for j := range modes {
			m := (i + j) % len(modes) // rotate who goes first
			d, err := envs[m].login("alice", modes[m].header)
			if err != nil {
				b.Fatalf("%s: %v", modes[m].name, err)
			}
			times[m] = append(times[m], d)
		}
		i++
	}
	mean := func(ds []time.Duration) time.Duration {
		var sum time.Duration
		for _, d := range ds {
			sum += d
		}
		return sum / time.Duration(len(ds))
	}
	for m, mode := range modes {
		b.ReportMetric(float64(time.Second)/float64(mean(times[m])), mode.name+"-logins/s")
		b.ReportMetric(float64(p99(times[m]))/float64(time.Millisecond), mode.name+"-p99-ms")
		if m > 0 {
			b.ReportMetric(float64(mean(times[m]))/float64(mean(times[0])), mode.name+"/off")
		}
	}
}

// scanConns is the size of the scan in BenchmarkScan.
const scanConns = 20_000

// BenchmarkScan sends 20,000 connections from as many addresses (PROXY v2
// headers from a trusted 127.0.0.1; each sends a header and a version line
// and hangs up, a noauth failure) while alice logs in over and over from
// 127.0.0.1 without a header. Reported: the process's resident memory before
// and after (client and server share it), the heap still in use after
// garbage collection, the penalty table's size, scan connections per
// second, and alice's logins that worked and their p99.
//
//	go test -run '^$' -bench Scan -benchtime 1x ./sshserver/
func BenchmarkScan(b *testing.B) {
	for _, bc := range []struct {
		name       string
		maxSources int
	}{
		{"table=65536", 0},
		{"table=2000", 2000},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := newEnv(b, Config{ProxyProtocol: ProxyProtocolOptional, ProxyProtocolTrustedCIDRs: CIDRs{netip.MustParsePrefix("127.0.0.1/32")},
				PenaltyMaxSources: bc.maxSources})
			for b.Loop() {
				runtime.GC()
				rssBefore := residentKiB(b)
				var before runtime.MemStats
				runtime.ReadMemStats(&before)

				var done atomic.Bool
				var logins, failed atomic.Int64
				var mu sync.Mutex
				var loginTimes []time.Duration
				userDone := make(chan struct{})
				go func() {
					defer close(userDone)
					for !done.Load() {
						d, err := e.login("alice", nil)
						if err != nil {
							failed.Add(1)
							continue
						}
						logins.Add(1)
						mu.Lock()
						loginTimes = append(loginTimes, d)
						mu.Unlock()
					}
				}()

				start := time.Now()
				var next atomic.Int64
				var wg sync.WaitGroup
				for range 16 {
					wg.Go(func() {
						for {
							i := next.Add(1) - 1
							if i >= scanConns {
								return
							}
							src := fmt.Sprintf("10.%d.%d.%d", byte(i>>16), byte(i>>8), byte(i))
							if err := scanOnce(e.addr, proxyHeader(b, 2, src)); err != nil {
								b.Errorf("scan %d: %v", i, err)
								return
							}
						}
					})
				}
				wg.Wait()
				elapsed := time.Since(start)
				done.Store(true)
				<-userDone

				runtime.GC()
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(rssBefore)/1024, "rss-before-MiB")
				b.ReportMetric(float64(residentKiB(b))/1024, "rss-after-MiB")
				b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/(1<<20), "heap-growth-MiB")
				b.ReportMetric(float64(e.srv.penalties.len()), "table-entries")
				b.ReportMetric(scanConns/elapsed.Seconds(), "scan-conns/s")
				b.ReportMetric(float64(logins.Load()), "user-logins-ok")
				b.ReportMetric(float64(failed.Load()), "user-logins-failed")
				if len(loginTimes) > 0 {
					b.ReportMetric(float64(p99(loginTimes))/float64(time.Millisecond), "user-p99-ms")
				}
			}
		})
	}
}

// scanOnce is one scanner's connection: header, version line, then it waits
// for the server to hang up, so the server has counted it before the next.
func scanOnce(addr string, header []byte) error {
	nc, err := net.DialTimeout("tcp", addr, 20*time.Second)
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := nc.Write(append(header, "SSH-2.0-scanner\r\n"...)); err != nil {
		return err
	}
	nc.(*net.TCPConn).CloseWrite()
	_, err = io.Copy(io.Discard, nc)
	return err
}

// residentKiB is this process's VmRSS.
func residentKiB(b *testing.B) int {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skip("no /proc/self/status")
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	return 0
}

// memConn is a net.Conn that reads from a buffer, for BenchmarkReadProxyHeader.
type memConn struct {
	net.Conn
	r *bytes.Reader
}

func (c memConn) Read(b []byte) (int, error) { return c.r.Read(b) }
func (memConn) RemoteAddr() net.Addr         { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// BenchmarkReadProxyHeader is the header's own cost on the server, without
// the network noise of BenchmarkProxyProtocolCost: read and check the
// header, then the client's version line through the buffered conn.
//
//	go test -run '^$' -bench ReadProxyHeader ./sshserver/
func BenchmarkReadProxyHeader(b *testing.B) {
	trusted := CIDRs{netip.MustParsePrefix("127.0.0.0/8")}
	version := []byte("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
	for _, bc := range []struct {
		name   string
		header []byte
	}{
		{"v1", proxyHeader(b, 1, "203.0.113.7")},
		{"v2", proxyHeader(b, 2, "203.0.113.7")},
		{"none", nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			in := append(append([]byte(nil), bc.header...), version...)
			buf := make([]byte, len(version))
			b.ReportAllocs()
			for b.Loop() {
				nc, _, err := readProxyHeader(memConn{r: bytes.NewReader(in)}, ProxyProtocolOptional, trusted)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(nc, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
