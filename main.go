/*
Copyright 2026 The gitssh Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// Command gitssh is a Kubernetes operator whose pods are also a git-over-SSH server.
// It only wires the command line (flags: internal/app/flags.go) to internal/app.
package main

import (
	"flag"
	"os"
	"runtime"
	"strings"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/gitssh-dev/gitssh/internal/app"
	"github.com/gitssh-dev/gitssh/internal/packhook"
	"github.com/gitssh-dev/gitssh/internal/timerslack"
)

func main() {
	// git upload-pack runs this binary as its pack-objects hook when
	// gitssh-pack-hook is not installed beside it: hand the request to the
	// gitssh process that serves the pack cache.
	if packhook.Is() {
		os.Exit(packhook.Run())
	}
	var opts app.Options
	opts.BindFlags(flag.CommandLine)
	zapOptions := zap.Options{}
	zapOptions.BindFlags(flag.CommandLine)
	flag.Parse()
	// Heap profiles are read only through --pprof-bind-address. Without it, sampling
	// allocations for them costs resident memory for nothing: the profile's bucket table
	// was 1.6 MB of gitssh's (BenchmarkScaleMemory). GODEBUG=memprofilerate=N still wins.
	if opts.PprofAddr == "" && !strings.Contains(os.Getenv("GODEBUG"), "memprofilerate=") {
		runtime.MemProfileRate = 0
	}

	log := zap.New(zap.UseFlagOptions(&zapOptions))
	ctrl.SetLogger(log)
	// Before anything starts: on success this re-executes gitssh.
	if err := timerslack.Ensure(opts.TimerSlack); err != nil {
		log.Error(err, "Kept the kernel's timer slack", "timerSlack", opts.TimerSlack)
	}

	if err := app.Run(ctrl.SetupSignalHandler(), ctrl.GetConfigOrDie(), opts, log); err != nil {
		log.Error(err, "gitssh stopped")
		os.Exit(1)
	}
}
