package controllers

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// RBAC: get on the one Service, granted by name, by hand (see LoadOrCreateHostKeys).

// PublicEndpoint is the address clients use to reach the SSH server: the host and port in
// clone URLs and known_hosts lines. It is either configured (--ssh-public-host) or read from
// the LoadBalancer Service in front of the pods.
type PublicEndpoint struct {
	// Host and Port as configured. When Host is empty, the address is read from Service.
	// Port 0 means 22 with a configured host, and the Service's first port otherwise.
	Host string
	Port int
	// Service is the LoadBalancer Service to read the address from.
	Service types.NamespacedName
	// Reader reads the Service; an uncached reader, since only "get" on one Service is allowed.
	Reader client.Reader
	// TTL is how long a Service lookup is reused. Default 10s.
	TTL time.Duration

	mu      sync.Mutex
	cached  hostPort
	expires time.Time
}

type hostPort struct {
	host string
	port int
	ok   bool
}

// Resolve returns the public host and port, ok=false while there is none (no configured
// host and no LoadBalancer address yet).
func (e *PublicEndpoint) Resolve(ctx context.Context) (host string, port int, ok bool) {
	if e.Host != "" {
		return e.Host, orDefaultPort(e.Port, 22), true
	}
	if e.Service.Name == "" || e.Reader == nil {
		return "", 0, false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if time.Now().Before(e.expires) {
		return e.cached.host, e.cached.port, e.cached.ok
	}
	e.cached = e.fromService(ctx)
	ttl := e.TTL
	if ttl == 0 {
		ttl = 10 * time.Second
	}
	e.expires = time.Now().Add(ttl)
	return e.cached.host, e.cached.port, e.cached.ok
}

func (e *PublicEndpoint) fromService(ctx context.Context) hostPort {
	var svc corev1.Service
	if err := e.Reader.Get(ctx, e.Service, &svc); err != nil {
		return hostPort{}
	}
	port := e.Port
	if port == 0 && len(svc.Spec.Ports) > 0 {
		port = int(svc.Spec.Ports[0].Port)
	}
	for _, ingress := range svc.Status.LoadBalancer.Ingress {
		if ingress.Hostname != "" {
			return hostPort{ingress.Hostname, orDefaultPort(port, 22), true}
		}
		if ingress.IP != "" {
			return hostPort{ingress.IP, orDefaultPort(port, 22), true}
		}
	}
	return hostPort{}
}

func orDefaultPort(port, def int) int {
	if port == 0 {
		return def
	}
	return port
}

// CloneURL is ssh://USER@HOST[:PORT]/OWNER/PROJECT.git, with the port left out when it is 22
// and IPv6 hosts in brackets.
func CloneURL(user, host string, port int, owner, project string) string {
	address := host
	if port != 22 {
		address = net.JoinHostPort(host, strconv.Itoa(port))
	} else if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		address = "[" + host + "]"
	}
	return fmt.Sprintf("ssh://%s@%s/%s/%s.git", user, address, owner, project)
}
