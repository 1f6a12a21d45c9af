package timerslack

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/onsi/gomega"
)

// helperSlackEnv makes TestHelperProcess call Ensure with this slack and print
// what the process ended up with.
const helperSlackEnv = "GITSSH_TIMERSLACK_TEST_SLACK"

// TestHelperProcess is the child process of the tests below, not a test.
func TestHelperProcess(t *testing.T) {
	value, ok := os.LookupEnv(helperSlackEnv)
	if !ok {
		t.Skip("the tests' child process")
	}
	slack, err := time.ParseDuration(value)
	if err != nil {
		t.Fatal(err)
	}
	if err := Ensure(slack); err != nil {
		t.Fatal(err)
	}
	// Once set, a second call neither re-executes nor fails.
	if err := Ensure(slack); err != nil {
		t.Fatal(err)
	}
	// Each thread's slack, sysmon's included: /proc/TID/timerslack_ns (not
	// listed in /proc, and not in /proc/self/task/TID/), readable for
	// another thread than the caller with CAP_SYS_NICE.
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc", task.Name(), "timerslack_ns"))
		if errors.Is(err, fs.ErrPermission) {
			os.Stdout.WriteString("no permission\n")
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("thread " + strings.TrimSpace(string(b)) + "\n")
	}
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("comm " + string(comm))
	if _, ok := os.LookupEnv(reexecEnv); ok {
		os.Stdout.WriteString("marker left\n")
	}
	os.Stdout.WriteString("done\n")
}

// runHelper runs TestHelperProcess in a new process and returns its output.
func runHelper(t *testing.T, slack string) string {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperSlackEnv+"="+slack)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	return string(out)
}

func skipWithoutPermission(t *testing.T, out string) {
	if strings.Contains(out, "no permission\n") {
		t.Skip("reading another thread's timer slack takes CAP_SYS_NICE")
	}
}

func threadSlacks(out string) []string {
	var slacks []string
	for line := range strings.Lines(out) {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "thread "); ok {
			slacks = append(slacks, s)
		}
	}
	return slacks
}

func TestEnsureSetsEveryThread(t *testing.T) {
	g := gomega.NewWithT(t)
	out := runHelper(t, "3ms")
	skipWithoutPermission(t, out)
	slacks := threadSlacks(out)
	// The main thread, sysmon and at least one more that runs goroutines:
	// sysmon is the one the re-execution is for.
	g.Expect(len(slacks)).To(gomega.BeNumerically(">=", 3), out)
	g.Expect(slacks).To(gomega.HaveEach("3000000"), out)
	g.Expect(strings.Count(out, "done\n")).To(gomega.Equal(1), "the second Ensure re-executed:\n"+out)
	g.Expect(out).NotTo(gomega.ContainSubstring("marker left"))
	// The process keeps its name (ps, /proc/PID/status): the kernel's is
	// the first 15 bytes of the executed file's name.
	name := filepath.Base(os.Args[0])
	g.Expect(out).To(gomega.ContainSubstring("comm " + name[:min(len(name), 15)] + "\n"))
}

func TestEnsureZeroKeepsTheKernels(t *testing.T) {
	g := gomega.NewWithT(t)
	ours, err := Current()
	g.Expect(err).NotTo(gomega.HaveOccurred())
	g.Expect(ours).NotTo(gomega.Equal(3*time.Millisecond), "this test needs a parent without the slack under test")
	out := runHelper(t, "0")
	skipWithoutPermission(t, out)
	slacks := threadSlacks(out)
	g.Expect(slacks).NotTo(gomega.BeEmpty())
	g.Expect(slacks).To(gomega.HaveEach(strconv.FormatInt(ours.Nanoseconds(), 10)))
}
