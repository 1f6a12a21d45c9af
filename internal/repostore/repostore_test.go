package repostore

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	. "github.com/onsi/gomega"
)

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v: %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestCreateMakesABareRepositoryWithTheDefaultBranch(t *testing.T) {
	g := NewWithT(t)
	store := Store{Root: t.TempDir()}
	created, err := store.Create(context.Background(), "acme", "api", "trunk")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(created).To(BeTrue())

	path := store.Path("acme", "api")
	g.Expect(path).To(Equal(filepath.Join(store.Root, "acme", "api.git")))
	g.Expect(git(t, path, "rev-parse", "--is-bare-repository")).To(Equal("true"))
	g.Expect(git(t, path, "symbolic-ref", "HEAD")).To(Equal("refs/heads/trunk"))
	g.Expect(filepath.Join(path, "hooks", "pre-receive.sample")).NotTo(BeAnExistingFile())

	// No temporary directories are left beside it.
	entries, err := os.ReadDir(filepath.Join(store.Root, "acme"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(entries).To(HaveLen(1))
}

// Create runs git in gitenv's environment: a config planted in gitssh's HOME, which git reads
// by default, does not reach the new repository.
func TestCreateIgnoresGlobalConfig(t *testing.T) {
	g := NewWithT(t)
	home := t.TempDir()
	g.Expect(os.WriteFile(filepath.Join(home, ".gitconfig"), []byte("[core]\n\tsharedRepository = group\n"), 0o644)).To(Succeed())
	t.Setenv("HOME", home)
	t.Setenv("GIT_CONFIG_GLOBAL", filepath.Join(home, ".gitconfig")) // in case the caller's names another
	g.Expect(git(t, home, "config", "--global", "core.sharedRepository")).To(Equal("group"), "the planted config is not where git looks")

	store := Store{Root: t.TempDir()}
	_, err := store.Create(context.Background(), "acme", "api", "main")
	g.Expect(err).NotTo(HaveOccurred())
	config, err := os.ReadFile(filepath.Join(store.Path("acme", "api"), "config"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(config)).NotTo(Or(ContainSubstring("sharedrepository"), ContainSubstring("denyNonFastforwards")))
}

func TestCreateNeverTouchesAnExistingRepository(t *testing.T) {
	g := NewWithT(t)
	store := Store{Root: t.TempDir()}
	_, err := store.Create(context.Background(), "acme", "api", "main")
	g.Expect(err).NotTo(HaveOccurred())
	path := store.Path("acme", "api")
	g.Expect(os.WriteFile(filepath.Join(path, "description"), []byte("precious\n"), 0o644)).To(Succeed())

	created, err := store.Create(context.Background(), "acme", "api", "other")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(created).To(BeFalse())
	g.Expect(git(t, path, "symbolic-ref", "HEAD")).To(Equal("refs/heads/main"))
	g.Expect(os.ReadFile(filepath.Join(path, "description"))).To(Equal([]byte("precious\n")))
}

func TestCreateRefusesSomethingElseAtThePath(t *testing.T) {
	g := NewWithT(t)
	store := Store{Root: t.TempDir()}
	path := store.Path("acme", "api")
	g.Expect(os.MkdirAll(path, 0o755)).To(Succeed())
	g.Expect(os.WriteFile(filepath.Join(path, "notes.txt"), []byte("keep me"), 0o644)).To(Succeed())

	_, err := store.Create(context.Background(), "acme", "api", "main")
	g.Expect(err).To(MatchError(ContainSubstring("exists but is not a bare git repository")))
	g.Expect(os.ReadFile(filepath.Join(path, "notes.txt"))).To(Equal([]byte("keep me")))
}

func TestConcurrentCreatesMakeOneRepository(t *testing.T) {
	g := NewWithT(t)
	store := Store{Root: t.TempDir()}
	var wg sync.WaitGroup
	results := make(chan bool, 8)
	for range 8 {
		wg.Go(func() {
			created, err := store.Create(context.Background(), "acme", "api", "main")
			g.Expect(err).NotTo(HaveOccurred())
			results <- created
		})
	}
	wg.Wait()
	close(results)
	createdCount := 0
	for created := range results {
		if created {
			createdCount++
		}
	}
	g.Expect(createdCount).To(Equal(1))
	entries, err := os.ReadDir(filepath.Join(store.Root, "acme"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(entries).To(HaveLen(1))
}

func TestDeleteRemovesTheRepositoryOnly(t *testing.T) {
	g := NewWithT(t)
	store := Store{Root: t.TempDir()}
	for _, project := range []string{"api", "web"} {
		_, err := store.Create(context.Background(), "acme", project, "main")
		g.Expect(err).NotTo(HaveOccurred())
	}
	g.Expect(store.Delete("acme", "api")).To(Succeed())
	g.Expect(store.Path("acme", "api")).NotTo(BeADirectory())
	g.Expect(store.Path("acme", "web")).To(BeADirectory())
	g.Expect(store.Delete("acme", "api")).To(Succeed(), "deleting a missing repository is not an error")

	g.Expect(store.Delete("acme", "web")).To(Succeed())
	g.Expect(filepath.Join(store.Root, "acme")).NotTo(BeADirectory(), "the empty owner directory goes too")
}

func TestHostileNamesAreRefused(t *testing.T) {
	store := Store{Root: t.TempDir()}
	for _, name := range [][2]string{{"..", "x"}, {"acme", "../../etc"}, {"acme/x", "y"}, {"", "api"}, {"acme", "api.git"}, {"-rf", "api"}, {"a..b", "c"}} {
		g := NewWithT(t)
		_, err := store.Create(context.Background(), name[0], name[1], "main")
		g.Expect(err).To(MatchError(ContainSubstring("is not a valid owner or project name")), "%q", name)
		g.Expect(store.Delete(name[0], name[1])).To(MatchError(ContainSubstring("is not a valid owner or project name")), "%q", name)
	}
	entries, _ := os.ReadDir(store.Root)
	NewWithT(t).Expect(entries).To(BeEmpty())
}
