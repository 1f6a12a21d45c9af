package repostore

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
)

// DiskUsage returns the sum of the sizes of the regular files under path: the size of a
// repository as its quota counts it. It is the apparent size (what ls shows), not the
// blocks allocated, so that the same repository measures the same on every file system.
//
// Symbolic links are neither followed nor counted: gitssh never makes one in a repository,
// and following one could count another repository, or a file outside the volume.
// Files and directories that vanish during the walk are skipped, because git removes
// files while it runs (a push's quarantine directory, temporary packs, git gc); the result
// is then a moment's snapshot, which is all a quota needs.
//
// It costs one lstat per file. A packed repository has a few dozen files; loose objects
// cost one each, 0.4 s for 100,000 on a 2-core machine (BenchmarkDiskUsage), but git's
// automatic gc after pushes packs them once there are about 6,700.
func DiskUsage(path string) (int64, error) {
	var total int64
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p != path {
				return nil // removed while we walked
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		total += info.Size()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("measuring the size of %s: %w", path, err)
	}
	return total, nil
}

// FormatSize writes a number of bytes for people, in binary units with at most one
// decimal: "512 bytes", "1.5 KiB", "200 MiB", "1.2 GiB".
func FormatSize(bytes int64) string {
	const units = "KMGTPE"
	if bytes < 1024 {
		return strconv.FormatInt(bytes, 10) + " bytes"
	}
	value, unit := float64(bytes)/1024, 0
	for value >= 1024 && unit < len(units)-1 {
		value /= 1024
		unit++
	}
	return strings.TrimSuffix(strconv.FormatFloat(value, 'f', 1, 64), ".0") + " " + units[unit:unit+1] + "iB"
}
