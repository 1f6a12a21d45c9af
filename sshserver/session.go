package sshserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gitssh-dev/gitssh/internal/authorizer"
	"golang.org/x/crypto/ssh"
)

// Exit statuses sent to clients.
const (
	exitShell          = 1
	exitRefused        = 128 // what git itself uses for a missing repository
	exitUnknownCommand = 127 // what a shell uses for a missing command
)

// session serves one session channel: at most one shell or exec request,
// plus GIT_PROTOCOL through env. It returns when the channel is closed on
// both sides, after the command it started has ended.
func (c *conn) session(nc ssh.NewChannel) {
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	var gitProtocol string
	var started, pty bool
	var done sync.WaitGroup
	for req := range reqs {
		ok := false
		var start func()
		switch req.Type {
		case "env":
			var kv struct{ Name, Value string }
			if ssh.Unmarshal(req.Payload, &kv) == nil && !started && kv.Name == "GIT_PROTOCOL" && validGitProtocol(kv.Value) {
				gitProtocol, ok = kv.Value, true
			}
		case "pty-req":
			// Accepted but no terminal is ever allocated: nothing interactive
			// runs. Refusing it would make "ssh -tt" fail before the shell
			// request could explain that.
			if !started {
				pty, ok = true, true
				c.s.cfg.Metrics.requestRefused(requestPty)
			}
		case "shell":
			if !started {
				start = func() { c.shell(ch, pty) }
			}
		case "exec":
			var e struct{ Command string }
			if ssh.Unmarshal(req.Payload, &e) == nil && !started {
				start = func() { c.exec(ctx, ch, e.Command, gitProtocol) }
			}
		default:
			// x11-req, auth-agent-req@openssh.com, subsystem (sftp),
			// window-change, signal, ...: refused.
			if t := sessionRequestRefusal(req.Type); t != "" {
				c.s.cfg.Metrics.requestRefused(t)
			}
			c.log.V(1).Info("Refused session request", "type", req.Type)
		}
		if start != nil {
			started, ok = true, true
		}
		if req.WantReply {
			req.Reply(ok, nil) // before the command can answer and close
		}
		if start != nil {
			done.Go(start)
		}
	}
	// The client closed the channel or went away: stop what still runs.
	cancel()
	done.Wait()
}

// validGitProtocol accepts values like "version=2" or "version=2:key=value".
func validGitProtocol(v string) bool {
	if v == "" || len(v) > 256 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !isAlnum(c) && !strings.ContainsRune("=:.,_-", rune(c)) {
			return false
		}
	}
	return true
}

func (c *conn) shell(ch ssh.Channel, pty bool) {
	eol := "\n"
	if pty {
		eol = "\r\n" // the client's terminal is in raw mode
	}
	c.s.cfg.Metrics.requestRefused(requestShell)
	fmt.Fprintf(ch.Stderr(), "Hi %s! You've successfully authenticated, but gitssh does not provide shell access.%s", c.id, eol)
	c.log.Info("Refused shell")
	exit(ch, exitShell)
}

func exit(ch ssh.Channel, status int) {
	ch.CloseWrite()
	ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
	ch.Close()
}

func (c *conn) exec(ctx context.Context, ch ssh.Channel, raw, gitProtocol string) {
	if c.forced != "" {
		// As OpenSSH does with a certificate's force-command: whatever was asked, this runs.
		c.log.Info("Ran the certificate's force-command instead of the command asked", "asked", quoteForMessage(raw), "forceCommand", c.forced)
		raw = c.forced
	}
	cmd, err := ParseCommand(raw)
	var pathErr *PathError
	switch {
	case errors.Is(err, ErrUnknownCommand):
		c.s.cfg.Metrics.requestRefused(requestUnknownCommand)
		fmt.Fprintf(ch.Stderr(), "gitssh: unknown command %s\n", quoteForMessage(raw))
		c.log.Info("Refused unknown command", "command", quoteForMessage(raw))
		exit(ch, exitUnknownCommand)
		return
	case errors.As(err, &pathErr):
		c.s.cfg.Metrics.gitCommand(pathErr.Service, gitRun{result: gitRefused})
		fmt.Fprintf(ch.Stderr(), "gitssh: %v\n", err)
		c.log.Info("Refused malformed repository path", "command", quoteForMessage(raw))
		exit(ch, exitRefused)
		return
	case err != nil:
		exit(ch, exitRefused)
		return
	}

	run := gitRun{result: gitRefused} // until git has run
	defer func() { c.s.cfg.Metrics.gitCommand(cmd.Service, run) }()

	access := authorizer.AccessRead
	if cmd.Service == ReceivePack {
		access = authorizer.AccessWrite
	}
	log := c.log.WithValues("command", cmd.Service, "repository", cmd.Owner+"/"+cmd.Project)
	repo, ok := c.s.auth.Authorize(c.id, cmd.Owner, cmd.Project, access)
	if ok && !isDir(repo.Path) {
		log.Error(nil, "Found no repository directory for an authorized project", "path", repo.Path)
		ok = false
		run.result = gitNotFound
	}
	if !ok {
		if _, exists := c.s.auth.ProjectOwner(cmd.Owner, cmd.Project); !exists {
			run.result = gitNotFound
		}
		// Missing and forbidden look the same to the client.
		fmt.Fprintf(ch.Stderr(), "gitssh: repository %q not found or access denied\n", cmd.Owner+"/"+cmd.Project)
		c.s.rec.KeyRefused(c.id)
		log.Info("Denied access", "access", access.String())
		exit(ch, exitRefused)
		return
	}

	var limit int64
	var limitWhat string
	var pack *packMeter
	if cmd.Service == ReceivePack {
		limit, limitWhat = c.s.pushLimit(repo)
		pack = &packMeter{}
	}
	if limit < 0 {
		fmt.Fprintf(ch.Stderr(), "gitssh: push refused: %s\n", limitWhat)
		log.Info("Refused push: the repository has reached its quota", "quota", repo.Quota)
		exit(ch, exitRefused)
		return
	}
	// With the pack cache, upload-pack's pack-objects waits for the turn
	// instead, in the cache: clones of one commit must reach it together to
	// share one run.
	if cmd.Service == UploadArchive || cmd.Service == UploadPack && c.s.packCache == nil {
		release, err := c.s.uploadTurn(ctx, repo.Path, ch.Stderr(), log)
		if err != nil {
			if errors.As(err, new(*busyError)) {
				fmt.Fprintf(ch.Stderr(), "gitssh: %v\n", err)
			}
			exit(ch, exitRefused)
			return
		}
		defer release()
	}
	start := time.Now()
	status, in, out, err := c.runGit(ctx, ch, cmd.Service, repo.Path, gitProtocol, limit, pack)
	if err != nil {
		log.Error(err, "Failed to run git command")
	}
	if c.s.killCtx.Err() != nil {
		// Forced shutdown (a pod rolled while a push ran past the grace period):
		// otherwise git says only "the remote end hung up unexpectedly".
		fmt.Fprintf(ch.Stderr(), "gitssh: the server is shutting down and stopped this git command before it finished; run it again.\n")
	}
	// git says only "pack exceeds maximum allowed size", and receive-pack
	// exits 0 after refusing: the pack's size tells, and the client learns
	// what the limit is.
	tooLarge := pack != nil && limit > 0 && pack.Bytes() > limit
	run = gitRun{result: gitOK, ran: true, duration: time.Since(start), in: in, out: out}
	if err != nil || status != 0 {
		run.result = gitError
	}
	if tooLarge {
		run.result = gitRefused
		c.s.cfg.Metrics.pushTooLarge()
		fmt.Fprintf(ch.Stderr(), "gitssh: push refused: the pack is larger than %s. Push fewer commits at a time, or ask for a higher limit.\n", limitWhat)
		log.Info("Refused push over its size limit", "limit", limit, "packBytesSeen", pack.Bytes())
	}
	if status == 0 && !tooLarge {
		if cmd.Service == ReceivePack {
			c.s.rec.Pushed(repo)
		} else {
			c.s.rec.Fetched(repo)
		}
	}
	log.Info("Ran git command", "gitProtocol", gitProtocol, "bytesIn", in, "bytesOut", out,
		"duration", time.Since(start), "exitStatus", status)
	exit(ch, status)
}

// gitCommand is "git ARGS" in dir with env, in its own process group,
// killed with it when ctx ends.
func (s *Server) gitCommand(ctx context.Context, dir string, args, env []string) *exec.Cmd {
	git := exec.CommandContext(ctx, s.cfg.GitBinary, args...)
	git.Dir = dir
	git.Env = env
	git.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	git.Cancel = func() error { return syscall.Kill(-git.Process.Pid, syscall.SIGKILL) }
	git.WaitDelay = 5 * time.Second
	return git
}

// packObjects is the pack cache's "git pack-objects ...", with the settings
// and environment of every git command gitssh runs.
func (s *Server) packObjects(ctx context.Context, dir string, args []string) *exec.Cmd {
	return s.gitCommand(ctx, dir, append(s.gitConfigArgs(dir, 0), args...), gitEnv(""))
}

// statelessUploadPack is the pack cache's "git upload-pack --stateless-rpc"
// in protocol v2: one request on stdin, its answer on stdout, as an HTTP
// server runs it.
func (s *Server) statelessUploadPack(ctx context.Context, dir string, args, env []string) *exec.Cmd {
	args = append(append(args, s.gitConfigArgs(dir, 0)...), "upload-pack", "--stateless-rpc", dir)
	return s.gitCommand(ctx, dir, args, append(gitEnv("version=2"), env...))
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

var bufPool sync.Pool

func (c *conn) getBuf() *[]byte {
	if b, ok := bufPool.Get().(*[]byte); ok && len(*b) == c.s.cfg.CopyBufferSize {
		return b
	}
	b := make([]byte, c.s.cfg.CopyBufferSize)
	return &b
}

// runGit runs "git SERVICE DIR" with the channel as its stdio, and with
// maxPush as receive.maxInputSize (0: none). It returns the exit status for
// the client, bytes read from and written to the client, and an error when
// git could not be run at all. pack, when not nil, is shown the client's
// input before git is. The child gets its own process group, killed when ctx
// ends (client gone, forced shutdown or MaxSessionDuration). The caller sends
// EOF and the exit status: it may have more to say on stderr.
func (c *conn) runGit(ctx context.Context, ch ssh.Channel, service, dir, gitProtocol string, maxPush int64, pack *packMeter) (status int, in, out int64, err error) {
	if c.s.cfg.MaxSessionDuration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.s.cfg.MaxSessionDuration)
		defer cancel()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	args := c.s.gitArgs(strings.TrimPrefix(service, "git-"), dir, maxPush)
	env := gitEnv(gitProtocol)
	if service == UploadPack && c.s.packCache != nil {
		cacheEnv, done := c.s.packCache.Env(dir)
		defer done()
		args = append(c.s.packCache.GitConfig(), args...)
		env = append(env, cacheEnv...)
	}
	git := c.s.gitCommand(ctx, dir, args, env)
	stdin, err := git.StdinPipe()
	if err != nil {
		return exitRefused, 0, 0, err
	}
	stdout, err := git.StdoutPipe()
	if err != nil {
		return exitRefused, 0, 0, err
	}
	stderr, err := git.StderrPipe()
	if err != nil {
		return exitRefused, 0, 0, err
	}
	if err := git.Start(); err != nil {
		fmt.Fprintf(ch.Stderr(), "gitssh: internal error\n")
		return exitRefused, 0, 0, err
	}

	var inN, outN atomic.Int64
	var toClient, errToClient io.Writer = ch, ch.Stderr()
	if service == UploadPack && c.s.packCache != nil {
		// Its turn is taken in pack-objects' hook: see busyAbortFilter.
		busy := new(atomic.Bool)
		errFilter := &busyAbortStderr{w: ch.Stderr(), busy: busy}
		defer errFilter.finish()
		toClient, errToClient = &busyAbortFilter{w: ch, busy: busy}, errFilter
	}
	// A v2 clone's fetch may be answered whole by the pack cache.
	var v2 *v2Fetches
	if service == UploadPack && c.s.packCache != nil && speaksV2(gitProtocol) {
		v2 = newV2Fetches(ctx, c.s.packCache, dir, toClient, errToClient, &outN, stdin)
		toClient = v2
	}
	// Client to git; the client's EOF closes git's stdin. Not waited for:
	// it ends when the channel closes.
	go func() {
		defer stdin.Close()
		if v2 != nil {
			v2.relay(ch, &inN)
			return
		}
		b := c.getBuf()
		defer bufPool.Put(b)
		var dst io.Writer = stdin
		if pack != nil {
			dst = io.MultiWriter(pack, stdin)
		}
		copyCounting(dst, ch, *b, &inN)
	}()
	var copies sync.WaitGroup
	for _, p := range []struct {
		dst io.Writer
		src io.Reader
	}{{toClient, stdout}, {errToClient, stderr}} {
		copies.Go(func() {
			b := c.getBuf()
			defer bufPool.Put(b)
			if err := copyCounting(p.dst, p.src, *b, &outN); err != nil {
				cancel() // the client is gone: nobody reads git's output
			}
			if p.dst == v2 {
				v2.closeAnswers()
			}
		})
	}
	copies.Wait()
	err = git.Wait()
	in, out = inN.Load(), outN.Load()
	var ee *exec.ExitError
	switch {
	case v2 != nil && v2.brokeOff():
		return exitRefused, in, out, nil
	case err == nil:
		return 0, in, out, nil
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), in, out, nil
		}
		return ee.ExitCode(), in, out, nil
	default:
		return exitRefused, in, out, err
	}
}

// copyCounting copies with the given buffer (io.CopyBuffer would let
// *os.File's WriteTo pick a smaller one) and counts bytes written.
func copyCounting(dst io.Writer, src io.Reader, buf []byte, n *atomic.Int64) error {
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n.Add(int64(nw))
			if werr != nil {
				return werr
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}
