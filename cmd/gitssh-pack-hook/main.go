// Command gitssh-pack-hook is what git upload-pack runs as
// uploadpack.packObjectsHook when gitssh's pack cache is on (internal/packhook).
// gitssh's own binary can be the hook too, but it starts the way every Go
// program does, with the package init of everything it links (client-go,
// controller-runtime): about 15 ms of CPU per fetch where this takes 3 ms.
// gitssh uses it when it is installed beside gitssh's executable.
package main

import (
	"fmt"
	"os"

	"github.com/gitssh-dev/gitssh/internal/packhook"
)

func main() {
	if !packhook.Is() {
		fmt.Fprintln(os.Stderr, "gitssh-pack-hook is run by git upload-pack for gitssh's pack cache, not by hand")
		os.Exit(2)
	}
	os.Exit(packhook.Run())
}
