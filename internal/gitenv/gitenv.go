// Package gitenv is the environment every git gitssh runs starts from, for the SSH server
// and housekeeping alike. It is a package of its own so that neither imports the other,
// and it imports nothing of Kubernetes.
package gitenv

import "os"

// Env is the whole environment of a git command: the PATH to find git's helpers, no
// system or global config file, and a HOME with nothing in it (also where
// ~/.config/git/attributes, read by git archive, would be). With the "-c" settings the
// callers pass, git reads no config but the repository's own.
func Env() []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	return []string{
		"PATH=" + path,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=" + os.DevNull,
		"HOME=" + os.DevNull,
	}
}
