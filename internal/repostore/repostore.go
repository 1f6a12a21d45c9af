// Package repostore keeps the bare git repositories on the gitssh volume, one directory
// <root>/<owner>/<project>.git per project. It knows git and the file system, not
// Kubernetes.
package repostore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/gitssh-dev/gitssh/internal/gitenv"
)

// segmentPattern is the same rule the GitProject schema and the SSH command parser apply to
// owner and project names; checked again here because a path on disk is built from them.
var segmentPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// Store creates, finds and removes bare repositories under Root.
type Store struct {
	// Root is the directory that holds <owner>/<project>.git, e.g. /var/lib/gitssh/repositories.
	Root string
	// GitBinary is the git executable; "git" from PATH when empty.
	GitBinary string
}

// Path returns where the repository of OWNER/PROJECT lives, whether or not it exists.
func (s Store) Path(owner, project string) string {
	return filepath.Join(s.Root, owner, project+".git")
}

// Create makes an empty bare repository for OWNER/PROJECT whose HEAD points to
// defaultBranch, unless one exists already; an existing repository is never touched.
// The repository is initialised in a temporary directory beside its final place and renamed
// into place, so a reader never sees a half-made repository and a crash leaves no debris
// at the final path. It reports whether it created the repository.
func (s Store) Create(ctx context.Context, owner, project, defaultBranch string) (created bool, err error) {
	if err := validName(owner, project); err != nil {
		return false, err
	}
	path := s.Path(owner, project)
	if exists, err := isBareRepository(path); exists || err != nil {
		return false, err
	}
	ownerDir := filepath.Dir(path)
	if err := os.MkdirAll(ownerDir, 0o750); err != nil {
		return false, fmt.Errorf("creating directory %s: %w", ownerDir, err)
	}
	tmp, err := os.MkdirTemp(ownerDir, ".creating-"+project+"-")
	if err != nil {
		return false, fmt.Errorf("creating a temporary directory in %s: %w", ownerDir, err)
	}
	defer os.RemoveAll(tmp) // a no-op once the rename succeeded

	// --template= keeps the sample hooks out; --initial-branch sets HEAD.
	cmd := exec.CommandContext(ctx, s.git(), "init", "--bare", "--quiet", "--template=",
		"--initial-branch="+defaultBranch, tmp)
	// gitssh's git environment: a global core.sharedRepository, for one, would make every
	// new repository group-writable and refuse force pushes.
	cmd.Env = gitenv.Env()
	if out, err := cmd.CombinedOutput(); err != nil {
		return false, fmt.Errorf("git init --bare for %s/%s: %w: %s", owner, project, err, strings.TrimSpace(string(out)))
	}
	if err := os.Rename(tmp, path); err != nil {
		// Someone else (another replica on a shared volume) created it meanwhile.
		if exists, _ := isBareRepository(path); exists {
			return false, nil
		}
		return false, fmt.Errorf("moving the new repository into %s: %w", path, err)
	}
	return true, nil
}

// Delete removes the repository of OWNER/PROJECT and all its data. A missing repository is
// not an error. The directory is first renamed out of the way, so that clients see it
// vanish at once rather than half-deleted.
func (s Store) Delete(owner, project string) error {
	if err := validName(owner, project); err != nil {
		return err
	}
	path := s.Path(owner, project)
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	trash, err := os.MkdirTemp(filepath.Dir(path), ".deleting-"+project+"-")
	if err != nil {
		return fmt.Errorf("preparing to delete %s: %w", path, err)
	}
	target := filepath.Join(trash, "repository")
	if err := os.Rename(path, target); err != nil {
		_ = os.Remove(trash)
		return fmt.Errorf("deleting %s: %w", path, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("deleting %s: %w", path, err)
	}
	// Leave no empty owner directory behind; fails harmlessly when other projects remain.
	_ = os.Remove(filepath.Dir(path))
	return nil
}

func (s Store) git() string {
	if s.GitBinary != "" {
		return s.GitBinary
	}
	return "git"
}

func validName(owner, project string) error {
	for _, segment := range []string{owner, project} {
		if !segmentPattern.MatchString(segment) || strings.Contains(segment, "..") || strings.HasSuffix(segment, ".git") {
			return fmt.Errorf("%q is not a valid owner or project name (letters, digits, '.', '_', '-'; no \"..\"; not ending in \".git\")", segment)
		}
	}
	return nil
}

// isBareRepository reports whether path holds a bare repository. Anything else at that path
// (a file, an unrelated directory) is an error: it is never overwritten.
func isBareRepository(path string) (bool, error) {
	info, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !info.IsDir() {
		return false, fmt.Errorf("%s exists and is not a directory; move it away to let gitssh create the repository", path)
	}
	for _, entry := range []string{"HEAD", "objects", "refs"} {
		if _, err := os.Stat(filepath.Join(path, entry)); err != nil {
			return false, fmt.Errorf("%s exists but is not a bare git repository (no %s); move it away to let gitssh create the repository", path, entry)
		}
	}
	return true, nil
}
