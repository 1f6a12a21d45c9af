package packcache

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"syscall"
)

// IsHook reports whether git started this process as
// uploadpack.packObjectsHook of a Cache: "HOOK git [--shallow-file ""] pack-objects ARGS"
// with the cache's environment. main calls RunHook then, before anything else.
func IsHook() bool {
	return len(os.Args) > 2 && os.Args[1] == "git" && slices.Contains(os.Args[2:], "pack-objects") && os.Getenv(envSocket) != ""
}

// RunHook hands this process's stdin, stdout and stderr to the gitssh process
// that serves the cache and returns the exit status it answers. When the
// cache cannot be reached or declines, it runs git pack-objects itself, so a
// fetch never fails for want of the cache.
func RunHook() int {
	args := os.Args[2:]
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: os.Getenv(envSocket), Net: "unix"})
	if err != nil {
		return execGit(args)
	}
	defer conn.Close()
	req, err := json.Marshal(request{Token: os.Getenv(envToken), Args: args})
	if err != nil {
		return execGit(args)
	}
	if _, _, err := conn.WriteMsgUnix(req, syscall.UnixRights(0, 1, 2), nil); err != nil {
		return execGit(args)
	}
	var rep reply
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
	git, err := exec.LookPath(os.Getenv(envGit))
	if err == nil {
		err = syscall.Exec(git, append([]string{"git"}, args...), os.Environ())
	}
	fmt.Fprintf(os.Stderr, "gitssh: cannot run git pack-objects: %v\n", err)
	return 128
}
