// Package packhook is the client half of the pack cache (internal/packcache):
// the program git upload-pack runs as uploadpack.packObjectsHook, and what it
// says to the gitssh process. It imports no more than it needs, because it
// starts once per fetch: cmd/gitssh-pack-hook is it alone, and gitssh's own
// binary runs it too when that is not installed.
package packhook

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"syscall"
)

// The hook's environment, which the cache sets for upload-pack.
const (
	EnvSocket = "GITSSH_PACK_CACHE_SOCKET"
	EnvToken  = "GITSSH_PACK_CACHE_TOKEN"
	EnvGit    = "GITSSH_PACK_CACHE_GIT"
)

// Request is what the hook sends, with its stdin, stdout and stderr.
type Request struct {
	Token string   `json:"token"`
	Args  []string `json:"args"` // after "git": [--shallow-file ''] pack-objects ...
}

// Reply is the answer: pack-objects' exit status, or Fallback when the hook
// should run pack-objects itself (the cache has not read its stdin).
type Reply struct {
	Exit     int  `json:"exit"`
	Fallback bool `json:"fallback,omitempty"`
}

// Is reports whether git started this process as the hook of a cache:
// "HOOK git [--shallow-file ""] pack-objects ARGS" with the cache's
// environment. A main calls Run then, before anything else.
func Is() bool {
	return len(os.Args) > 2 && os.Args[1] == "git" && slices.Contains(os.Args[2:], "pack-objects") && os.Getenv(EnvSocket) != ""
}

// Run hands this process's stdin, stdout and stderr to the gitssh process
// that serves the cache and returns the exit status it answers. When the
// cache cannot be reached or declines, it runs git pack-objects itself, so a
// fetch never fails for want of the cache.
func Run() int {
	args := os.Args[2:]
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: os.Getenv(EnvSocket), Net: "unix"})
	if err != nil {
		return execGit(args)
	}
	defer conn.Close()
	req, err := json.Marshal(Request{Token: os.Getenv(EnvToken), Args: args})
	if err != nil {
		return execGit(args)
	}
	if _, _, err := conn.WriteMsgUnix(req, syscall.UnixRights(0, 1, 2), nil); err != nil {
		return execGit(args)
	}
	var rep Reply
	if err := json.NewDecoder(conn).Decode(&rep); err != nil {
		// Stdin may be read already: too late to run pack-objects here.
		fmt.Fprintln(os.Stderr, "gitssh: the server stopped while preparing the pack; fetch again")
		return 128
	}
	if rep.Fallback {
		return execGit(args)
	}
	return rep.Exit
}

// execGit replaces this process with "git ARGS".
func execGit(args []string) int {
	git, err := exec.LookPath(os.Getenv(EnvGit))
	if err == nil {
		err = syscall.Exec(git, append([]string{"git"}, args...), os.Environ())
	}
	fmt.Fprintf(os.Stderr, "gitssh: cannot run git pack-objects: %v\n", err)
	return 128
}
