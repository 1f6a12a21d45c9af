// Package timerslack runs gitssh with a timer slack larger than Linux's
// default 50µs, for every thread of the process.
//
// Go's scheduler monitor (sysmon) is a thread of its own that sleeps 20µs at
// a time for a while after it has taken a processor from a goroutine blocked
// in a system call, which a busy server makes it do many times a second. Each
// of those sleeps is a timer and two context switches: on the 2-core VM we
// measure on, 22µs of CPU each, 40,000–50,000 of them in a 30-clone fan-out,
// 15% of gitssh's CPU. With a slack of 4ms the kernel may wake such a sleeper
// up to 4ms late, so it wakes a seventh as often; every other timer of the
// process (deadlines, time.Sleep, the pack cache's 2ms growth poll) may also
// fire up to the slack late, which nothing in a git server notices: logins
// during a fan-out took as long with 4ms as with 1ms, p50 and p99
// (hack/bench/README.md, "Timer slack 4 ms").
//
// A thread's slack is set with prctl(PR_SET_TIMERSLACK) for itself and
// inherited by the threads it creates and across execve. sysmon is created by
// the runtime before any of our code runs, and setting another thread's slack
// (/proc/self/task/TID/timerslack_ns) takes CAP_SYS_NICE, which the pod does
// not have. So Ensure sets the calling thread's slack and re-executes the
// binary from it: the new process starts with the slack in all its threads.
package timerslack

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Default is gitssh's timer slack unless --timer-slack says otherwise.
const Default = 4 * time.Millisecond

// reexecEnv marks the process Ensure started, so that a kernel that ignores
// the setting cannot make it re-execute forever.
const reexecEnv = "GITSSH_TIMER_SLACK_REEXEC"

// Current returns the calling thread's timer slack. Threads inherit it from
// the thread that created them, so it is every thread's unless something
// set one thread's alone. (/proc/self/timerslack_ns is the main thread's, and
// reading it from another thread takes CAP_SYS_NICE.)
func Current() (time.Duration, error) {
	ns, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil {
		return 0, fmt.Errorf("prctl(PR_GET_TIMERSLACK): %w", err)
	}
	return time.Duration(ns), nil
}

// Ensure re-executes the running binary, with the same arguments and
// environment, with the given timer slack, unless the process already has it
// or slack is 0 (keep the kernel's). It returns only when it did not
// re-execute: nil when there was nothing to do, else why it could not. Call it
// first thing in main, before the process starts anything it would lose.
func Ensure(slack time.Duration) error {
	if _, again := os.LookupEnv(reexecEnv); again {
		// Not for git and the processes gitssh starts.
		os.Unsetenv(reexecEnv)
		if current, err := Current(); err == nil && slack > 0 && current != slack {
			return fmt.Errorf("timer slack is %v after re-executing with %v", current, slack)
		}
		return nil
	}
	if slack <= 0 {
		return nil
	}
	current, err := Current()
	if err != nil {
		return err
	}
	if current == slack {
		return nil
	}
	// The binary's own path, not /proc/self/exe: the process's name (comm,
	// what ps and /proc/PID/status show) is the last element of the path
	// executed, and would become "exe".
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the running binary to re-execute with timer slack %v: %w", slack, err)
	}
	// The slack and the execve must be on one thread: the new process's
	// main thread is the thread that called execve.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(slack.Nanoseconds()), 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_TIMERSLACK, %v): %w", slack, err)
	}
	err = syscall.Exec(exe, os.Args, append(os.Environ(), reexecEnv+"=1"))
	// Only a failed exec returns; put this thread's slack back, as the rest of the process has it.
	unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(current.Nanoseconds()), 0, 0, 0)
	return fmt.Errorf("re-executing %s with timer slack %v: %w", exe, slack, err)
}
