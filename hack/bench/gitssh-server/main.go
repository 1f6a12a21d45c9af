// Command gitssh-server serves a directory of bare repositories with the real
// sshserver package, for hack/bench/ssh-vs-openssh.sh. One public key logs in
// as one user who is Admin of every OWNER/PROJECT.git under -repo-root.
// It is a benchmark fixture, not a way to run gitssh.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"golang.org/x/crypto/ssh"

	"github.com/gitssh-dev/gitssh/internal/authorizer"
	"github.com/gitssh-dev/gitssh/internal/hostkeys"
	"github.com/gitssh-dev/gitssh/internal/packcache"
	"github.com/gitssh-dev/gitssh/internal/packhook"
	"github.com/gitssh-dev/gitssh/internal/timerslack"
	"github.com/gitssh-dev/gitssh/sshserver"
)

const benchUser = "bench"

func main() {
	// git upload-pack runs this binary as its pack-objects hook when the
	// pack cache is on, as it runs gitssh's.
	if packhook.Is() {
		os.Exit(packhook.Run())
	}
	listen := flag.String("listen", "127.0.0.1:2222", "address to listen on")
	repoRoot := flag.String("repo-root", "", "directory holding OWNER/PROJECT.git bare repositories")
	hostKey := flag.String("host-key", "", "OpenSSH private host key file (the same one sshd gets, for a fair comparison)")
	authorizedKeys := flag.String("authorized-keys", "", "authorized_keys file; every key in it logs in as the user owning everything")
	copyBuf := flag.Int("copy-buffer", 0, "sshserver.Config.CopyBufferSize; 0 takes the default")
	ciphers := flag.String("ciphers", "", "sshserver.Config.Ciphers, comma-separated; empty takes the default")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile here until SIGTERM/SIGINT")
	verbose := flag.Bool("v", false, "log to stderr")
	packCacheDir := flag.String("pack-cache-dir", "", "sshserver.Config.PackCache.Dir; empty: no pack cache")
	queueTimeout := flag.Duration("upload-queue-timeout", 0, "sshserver.Config.UploadQueueTimeout; 0 takes the default")
	timerSlack := flag.Duration("timer-slack", timerslack.Default, "the process's timer slack, as gitssh's --timer-slack; 0: the kernel's")
	flag.Parse()
	if err := timerslack.Ensure(*timerSlack); err != nil {
		log.Printf("kept the kernel's timer slack: %v", err)
	}
	if *repoRoot == "" || *hostKey == "" || *authorizedKeys == "" {
		log.Fatal("-repo-root, -host-key and -authorized-keys are required")
	}

	pem, err := os.ReadFile(*hostKey)
	if err != nil {
		log.Fatal(err)
	}
	signers, err := hostkeys.Load(map[string][]byte{filepath.Base(*hostKey): pem})
	if err != nil {
		log.Fatal(err)
	}
	auth, keys, repos, err := authorizerFor(*repoRoot, *authorizedKeys)
	if err != nil {
		log.Fatal(err)
	}

	logger := logr.Discard()
	if *verbose {
		logger = funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{Verbosity: 1})
	}
	cfg := sshserver.Config{CopyBufferSize: *copyBuf, PackCache: packcache.Config{Dir: *packCacheDir}, UploadQueueTimeout: *queueTimeout}
	if *ciphers != "" {
		cfg.Ciphers = strings.Split(*ciphers, ",")
	}
	srv, err := sshserver.New(cfg, signers, auth, nil, logger)
	if err != nil {
		log.Fatal(err)
	}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe(*listen) }()
	log.Printf("Serving %d repositories from %s to %d keys on %s", repos, *repoRoot, keys, *listen)
	select {
	case err := <-errc:
		log.Fatal(err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
}

// authorizerFor registers every key of the authorized_keys file for
// benchUser and every ROOT/OWNER/PROJECT.git as a project benchUser is Admin of.
func authorizerFor(root, keysFile string) (a *authorizer.Authorizer, keys, repos int, err error) {
	b, err := os.ReadFile(keysFile)
	if err != nil {
		return nil, 0, 0, err
	}
	a = authorizer.New()
	for rest := b; len(bytes.TrimSpace(rest)) > 0; keys++ {
		var pub ssh.PublicKey
		pub, _, _, rest, err = ssh.ParseAuthorizedKey(rest)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("%s: key %d: %w", keysFile, keys+1, err)
		}
		a.SetKey(authorizer.ObjectRef{Namespace: "bench", Name: fmt.Sprintf("key-%d", keys)},
			authorizer.Key{Fingerprint: ssh.FingerprintSHA256(pub), User: benchUser})
	}
	dirs, err := filepath.Glob(filepath.Join(root, "*", "*.git"))
	if err != nil {
		return nil, 0, 0, err
	}
	for _, d := range dirs {
		owner := filepath.Base(filepath.Dir(d))
		name := strings.TrimSuffix(filepath.Base(d), ".git")
		a.SetProject(authorizer.ObjectRef{Namespace: "bench", Name: owner + "-" + name}, authorizer.Project{
			Owner: owner, Name: name, RepositoryPath: d,
			Members: map[string]authorizer.Role{benchUser: authorizer.RoleAdmin},
		})
	}
	return a, keys, len(dirs), nil
}
