//go:build e2e

// Package e2e tests gitssh as users run it: the image built from the Dockerfile, installed
// with `helm install` on a real single-node Kubernetes, reached through its LoadBalancer
// address with real ssh and git. `make e2e` starts the cluster (hack/cluster), runs these
// tests inside its network namespace and tears it down; plain `go test ./...` skips them
// (build tag e2e).
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

const (
	namespace = "gitssh"
	release   = "gitssh"
)

// cluster is what hack/cluster/up.sh printed (its output contract) plus the tools.
type cluster struct {
	kubectl, helm, chart, image string
	ns, release                 string
}

// other is the same cluster for another release in its own namespace.
func (c *cluster) other(release, ns string) *cluster {
	o := *c
	o.release, o.ns = release, ns
	return &o
}

func env(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{
		kubectl: os.Getenv("KUBECTL"),
		helm:    os.Getenv("HELM"),
		chart:   os.Getenv("GITSSH_CHART"),
		image:   os.Getenv("GITSSH_IMAGE"),
		ns:      namespace,
		release: release,
	}
	for name, v := range map[string]string{"KUBECONFIG": os.Getenv("KUBECONFIG"), "KUBECTL": c.kubectl, "HELM": c.helm, "GITSSH_CHART": c.chart, "GITSSH_IMAGE": c.image} {
		if v == "" {
			t.Fatalf("%s is not set: run these tests with 'make e2e', which starts the cluster and sets it", name)
		}
	}
	return c
}

// run runs a command with a deadline and returns its combined output.
func run(t *testing.T, timeout time.Duration, dir string, extraEnv []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), extraEnv...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (c *cluster) kubectlErr(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return run(t, 2*time.Minute, "", nil, c.kubectl, append([]string{"-n", c.ns}, args...)...)
}

func (c *cluster) kubectlOK(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.kubectlErr(t, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (c *cluster) apply(t *testing.T, yaml string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.kubectl, "-n", c.ns, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(yaml)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}

func (c *cluster) helmOK(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(t, 6*time.Minute, "", nil, c.helm, append([]string{"-n", c.ns}, args...)...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// installArgs are `helm install`'s: the chart's defaults, only the image overridden.
func (c *cluster) installArgs() []string {
	i := strings.LastIndex(c.image, ":")
	return []string{"install", c.release, c.chart, "--set", "image.repository=" + c.image[:i], "--set", "image.tag=" + c.image[i+1:], "--wait", "--timeout", "5m"}
}

// address is the Service's LoadBalancer address and port, as MetalLB assigned it.
func (c *cluster) address(t *testing.T) (host, port string) {
	t.Helper()
	var out string
	NewWithT(t).Eventually(func(g Gomega) {
		var err error
		out, err = c.kubectlErr(t, "get", "service", c.release, "-o", "jsonpath={.status.loadBalancer.ingress[0].ip} {.spec.ports[0].port}")
		g.Expect(err).NotTo(HaveOccurred(), out)
		g.Expect(strings.Fields(out)).To(HaveLen(2), "no LoadBalancer address yet")
	}).WithTimeout(time.Minute).WithPolling(time.Second).Should(Succeed())
	f := strings.Fields(out)
	return f[0], f[1]
}

// knownHosts writes the published known_hosts ConfigMap to a file once it names the
// Service's address, and returns the file.
func (c *cluster) knownHosts(t *testing.T, host string) string {
	t.Helper()
	var out string
	NewWithT(t).Eventually(func(g Gomega) {
		var err error
		out, err = c.kubectlErr(t, "get", "configmap", "gitssh-host-keys-known-hosts", "-o", "jsonpath={.data.known_hosts}")
		g.Expect(err).NotTo(HaveOccurred(), out)
		g.Expect(out).To(ContainSubstring(host))
	}).WithTimeout(time.Minute).WithPolling(time.Second).Should(Succeed())
	path := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// hostKeys are the "type base64" pairs of known_hosts-format lines, sorted.
func hostKeys(text string) []string {
	var keys []string
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && !strings.HasPrefix(f[0], "#") {
			keys = append(keys, f[1]+" "+f[2])
		}
	}
	sort.Strings(keys)
	return keys
}

// scan is what the server at host:port offers, by ssh-keyscan.
func scan(t *testing.T, host, port string) []string {
	t.Helper()
	out, err := run(t, 30*time.Second, "", nil, "ssh-keyscan", "-T", "10", "-p", port, host)
	if err != nil {
		t.Fatalf("ssh-keyscan %s:%s: %v\n%s", host, port, err, out)
	}
	return hostKeys(out)
}

// rollback rolls the release back (to revision, else to the one before) and waits until
// the Service's address answers again: the next test connects at once, and the new pod is
// Ready a moment before kube-proxy routes to it ("No route to host" until then).
func (c *cluster) rollback(t *testing.T, revision ...string) {
	t.Helper()
	c.helmOK(t, append(append([]string{"rollback", release}, revision...), "--wait", "--timeout", "5m")...)
	// helm waits for the new pods only. Until the old ones are gone, the Service's address
	// may still reach a terminating pod and then, for a moment, none ("No route to host"
	// in the next test's push): wait for them before checking the address answers.
	NewWithT(t).Eventually(func(g Gomega) {
		ready, all := c.pods(t, g)
		g.Expect(ready).NotTo(BeEmpty())
		g.Expect(all).To(Equal(len(ready)), "pods still terminating or not ready")
	}).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(Succeed())
	host, port := c.address(t)
	scanEventually(t, host, port)
}

// scanEventually is scan once the address answers: a new pod is Ready a moment before
// kube-proxy routes the Service's address to it.
func scanEventually(t *testing.T, host, port string) []string {
	t.Helper()
	var keys []string
	NewWithT(t).Eventually(func(g Gomega) {
		out, err := run(t, 30*time.Second, "", nil, "ssh-keyscan", "-T", "5", "-p", port, host)
		g.Expect(err).NotTo(HaveOccurred(), out)
		keys = hostKeys(out)
		g.Expect(keys).NotTo(BeEmpty(), out)
	}).WithTimeout(time.Minute).WithPolling(time.Second).Should(Succeed())
	return keys
}

// user is a key pair registered as an SSHPublicKey, and the ssh command git uses with it.
type user struct {
	name, key, sshCommand string
}

func (c *cluster) newUser(t *testing.T, name, knownHosts string) *user {
	t.Helper()
	key := filepath.Join(t.TempDir(), "id_ed25519")
	if out, err := run(t, 30*time.Second, "", nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	c.apply(t, "apiVersion: gitssh.dev/v1alpha1\nkind: SSHPublicKey\nmetadata: {name: "+name+"}\nspec:\n  user: "+name+"\n  publicKey: "+strings.TrimSpace(string(pub))+"\n")
	c.kubectlOK(t, "wait", "--for=condition=Ready", "sshpublickey/"+name, "--timeout=60s")
	return &user{
		name: name, key: key,
		sshCommand: "ssh -i " + key + " -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=" + knownHosts,
	}
}

func (c *cluster) newProject(t *testing.T, owner, project string) {
	t.Helper()
	name := owner + "-" + project
	c.apply(t, "apiVersion: gitssh.dev/v1alpha1\nkind: GitProject\nmetadata: {name: "+name+"}\nspec: {owner: "+owner+", project: "+project+"}\n")
	c.kubectlOK(t, "wait", "--for=condition=Ready", "gitproject/"+name, "--timeout=60s")
}

// git runs git as u in dir.
func (u *user) git(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	return run(t, 2*time.Minute, dir, []string{
		"GIT_SSH_COMMAND=" + u.sshCommand,
		"GIT_AUTHOR_NAME=e2e", "GIT_AUTHOR_EMAIL=e2e@example.com",
		"GIT_COMMITTER_NAME=e2e", "GIT_COMMITTER_EMAIL=e2e@example.com",
		"GIT_CONFIG_NOSYSTEM=1", "HOME=" + dir,
	}, "git", args...)
}

func (u *user) gitOK(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := u.git(t, dir, args...)
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func repoURL(host, port, owner, project string) string {
	return "ssh://git@" + host + ":" + port + "/" + owner + "/" + project + ".git"
}

// podName is the one gitssh pod that is Ready and not being deleted.
func (c *cluster) podName(t *testing.T) string {
	t.Helper()
	c.kubectlOK(t, "rollout", "status", "deployment/"+c.release, "--timeout=3m")
	var name string
	NewWithT(t).Eventually(func(g Gomega) {
		ready := c.readyPods(t, g)
		g.Expect(ready).To(HaveLen(1))
		name = ready[0]
	}).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(Succeed())
	return name
}

// readyPods are the release's pods that are Ready and not being deleted.
func (c *cluster) readyPods(t *testing.T, g Gomega) []string {
	ready, _ := c.pods(t, g)
	return ready
}

// pods are the release's pods that are Ready and not being deleted, and how many pods the
// release has in all (terminating ones included).
func (c *cluster) pods(t *testing.T, g Gomega) (ready []string, all int) {
	t.Helper()
	out, err := c.kubectlErr(t, "get", "pods", "-l", "app.kubernetes.io/name=gitssh,app.kubernetes.io/instance="+c.release, "-o", "json")
	g.Expect(err).NotTo(HaveOccurred(), out)
	var list struct {
		Items []struct {
			Metadata struct {
				Name              string  `json:"name"`
				DeletionTimestamp *string `json:"deletionTimestamp"`
			} `json:"metadata"`
			Status struct {
				Conditions []struct{ Type, Status string } `json:"conditions"`
			} `json:"status"`
		} `json:"items"`
	}
	g.Expect(json.Unmarshal([]byte(out), &list)).To(Succeed())
	for _, p := range list.Items {
		for _, cond := range p.Status.Conditions {
			if cond.Type == "Ready" && cond.Status == "True" && p.Metadata.DeletionTimestamp == nil {
				ready = append(ready, p.Metadata.Name)
			}
		}
	}
	return ready, len(list.Items)
}
