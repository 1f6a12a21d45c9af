// Command housekeep runs gitssh's housekeeping (internal/housekeeping) once on a bare
// repository, as the leader would: for hack/bench/small-pushes.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/gitssh-dev/gitssh/internal/housekeeping"
)

func main() {
	full := flag.Bool("full", false, "a full run instead of an incremental one")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: housekeep [-full] REPOSITORY.git")
		os.Exit(2)
	}
	if err := housekeeping.Run(context.Background(), flag.Arg(0), housekeeping.Options{Full: *full}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	f, err := housekeeping.Measure(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("packs=%d loose=%d bitmap=%v commit-graph=%v\n", f.Packs, f.LooseObjects, f.Bitmap, f.CommitGraph)
}
