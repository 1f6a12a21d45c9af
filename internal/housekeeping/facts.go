package housekeeping

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Facts describe how a repository is stored, which is what decides a clone's cost.
type Facts struct {
	// Packs is the number of pack files, a cruft pack included.
	Packs int
	// LooseObjects is the number of objects stored one file each.
	LooseObjects int
	// Bitmap tells whether a reachability bitmap (of a pack or the multi-pack index) exists.
	Bitmap bool
	// CommitGraph tells whether a commit-graph exists.
	CommitGraph bool
}

// Measure reads the facts of the bare repository at dir from its directory listing: one
// readdir per loose-object directory, no git. Files that vanish meanwhile (a run or a push
// at the same time) are simply not counted.
func Measure(dir string) (Facts, error) {
	var f Facts
	objects := filepath.Join(dir, "objects")
	entries, err := os.ReadDir(objects)
	if err != nil {
		return f, err
	}
	for _, e := range entries {
		if !e.IsDir() || len(e.Name()) != 2 || !isHex(e.Name()) {
			continue
		}
		names, err := os.ReadDir(filepath.Join(objects, e.Name()))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return f, err
		}
		for _, n := range names {
			// tmp_obj_* files are objects being written.
			if len(n.Name()) == 38 && isHex(n.Name()) {
				f.LooseObjects++
			}
		}
	}
	packs, err := os.ReadDir(filepath.Join(objects, "pack"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return f, err
	}
	for _, p := range packs {
		switch name := p.Name(); {
		case strings.HasPrefix(name, "pack-") && strings.HasSuffix(name, ".pack"):
			f.Packs++
		case strings.HasSuffix(name, ".bitmap"):
			f.Bitmap = true
		}
	}
	for _, graph := range []string{"info/commit-graph", "info/commit-graphs/commit-graph-chain"} {
		if _, err := os.Stat(filepath.Join(objects, graph)); err == nil {
			f.CommitGraph = true
		}
	}
	return f, nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
