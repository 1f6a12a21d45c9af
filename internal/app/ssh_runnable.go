package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/gitssh-dev/gitssh/sshserver"
)

// loader fills the authorizer from the cache in one go.
type loader interface {
	LoadAll(ctx context.Context) error
}

// sshRunnable runs the SSH server inside the manager, on every replica. It opens the
// listener only once the caches have synced and the authorizer holds every key and project,
// so that a restarted pod never refuses a valid key.
type sshRunnable struct {
	server   *sshserver.Server
	addr     string
	listener net.Listener
	grace    time.Duration
	cache    cache.Cache
	// informers are started here, on every replica, for controllers that run on the
	// leader only: the pod is ready once they have synced too, and a new leader starts
	// with them warm.
	informers []client.Object
	loaders   []loader
	log       logr.Logger
	// afterShutdown runs once the server has stopped, within the grace period's context.
	afterShutdown func(context.Context)
}

// NeedLeaderElection is false: every replica serves SSH.
func (r *sshRunnable) NeedLeaderElection() bool { return false }

func (r *sshRunnable) Start(ctx context.Context) error {
	for _, obj := range r.informers {
		if _, err := r.cache.GetInformer(ctx, obj, cache.BlockUntilSynced(false)); err != nil {
			return fmt.Errorf("starting the cache of %T: %w", obj, err)
		}
	}
	if !r.cache.WaitForCacheSync(ctx) {
		return errors.New("caches did not sync before shutdown")
	}
	for _, l := range r.loaders {
		if err := l.LoadAll(ctx); err != nil {
			return fmt.Errorf("loading the authorizer: %w", err)
		}
	}
	listener := r.listener
	if listener == nil {
		var err error
		if listener, err = net.Listen("tcp", r.addr); err != nil {
			return fmt.Errorf("SSH server: %w", err)
		}
	}
	r.log.Info("Serving SSH", "addr", listener.Addr().String())

	served := make(chan error, 1)
	go func() { served <- r.server.Serve(listener) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	r.log.Info("Shutting down the SSH server", "gracePeriod", r.grace)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), r.grace)
	defer cancel()
	if err := r.server.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if r.afterShutdown != nil {
		flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.afterShutdown(flushCtx)
	}
	if err := <-served; err != nil && !errors.Is(err, sshserver.ErrServerClosed) {
		return err
	}
	return nil
}
