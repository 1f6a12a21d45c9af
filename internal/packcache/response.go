package packcache

import (
	"context"
	"errors"
	"io"
	"os/exec"
)

// ErrNotServed is Response's answer when it sent nothing: the caller hands
// the request to its own upload-pack instead.
var ErrNotServed = errors.New("fetch response not served from the pack cache")

// Response serves a protocol v2 fetch request whole: the bytes git
// upload-pack answers it with, the "packfile" section and its pack
// included. Clones of one commit, CI's fan-out, then cost one upload-pack
// and one pack-objects between them: later ones are a copy of a file, with
// no git process and no relay through upload-pack's pipes, which was most
// of what a hit on the pack alone still cost.
//
// The first request for a key runs Config.UploadPack with request on its
// stdin into a new entry (its pack-objects goes through the hook, the cache
// and a turn as any other); the entry is kept only when upload-pack exits 0.
// Every request, the first too, reads the entry as it grows, so no client
// waits for another to read.
//
// The key is the repository, request and depends: what else the response
// depends on that request does not say. The caller speaks the protocol and
// knows that: for a fetch, the refs the client was shown, so that a push
// (or a deleted ref) makes the next fetch a miss. A response that failed
// before anything was sent returns ErrNotServed, and so does every request
// when Config.UploadPack is nil or the request is over 64 MiB.
func (c *Cache) Response(ctx context.Context, dir string, depends []string, request []byte, w, stderr io.Writer) (int64, error) {
	if c.cfg.UploadPack == nil || len(request) > maxStdin {
		c.m.responses.WithLabelValues(resultBypass).Inc()
		return 0, ErrNotServed
	}
	k := key(dir, append([]string{"v2-fetch-response"}, depends...), request)
	// upload-pack runs pack-objects through the hook, as a session's does: a
	// pack-objects run is shared between responses that differ only in the
	// refs listed (a push to another branch), and waits for its turn there.
	uploadPack := producer{command: func(ctx context.Context) (*exec.Cmd, func()) {
		env, done := c.Env(dir)
		return c.cfg.UploadPack(ctx, dir, c.GitConfig(), env), done
	}}
	sent, err := c.share(ctx, c.m.responses, k, dir, uploadPack, request, w, stderr)
	switch {
	case err == nil:
		return sent, nil
	case errors.Is(err, errNoEntry), errors.Is(err, errPackObjectsFailed) && sent == 0:
		if !errors.Is(err, errPackObjectsFailed) && !errors.Is(err, errNoRoom) {
			c.cfg.Log.Error(err, "Failed to create a fetch response cache entry, leaving the request to upload-pack")
		}
		c.m.responses.WithLabelValues(resultBypass).Inc()
		return 0, ErrNotServed
	default:
		c.reportFailure(ctx, err, sent, stderr, "a fetch response")
		return sent, err
	}
}
