package sshserver

import (
	"os"
	"strconv"

	"github.com/gitssh-dev/gitssh/internal/gitenv"
)

// gitConfig is every git setting gitssh relies on, in one place. Each git
// command gets them as "-c key=value", which wins over the repository's own
// config, and gitEnv leaves git no other file to read: GIT_CONFIG_NOSYSTEM
// skips /etc/gitconfig, GIT_CONFIG_GLOBAL and HOME point at /dev/null, under
// which nothing can ever be created. So neither an image nor a volume can plant
// settings (hooks, pack-objects hooks, fsck exceptions) that change what is
// accepted or run. README's "Security model" lists the same settings.
var gitConfig = []struct{ key, value string }{
	// Every pushed object is checked as git fsck would (index-pack or
	// unpack-objects --strict) while it is still in the push's quarantine
	// directory; a push with one bad object is refused whole and nothing of it
	// is kept. --strict makes every fsck warning an error unless its severity
	// is set below.
	{"receive.fsckObjects", "true"},

	// Checks that guard clients must stay errors whatever a repository's own
	// config says: tree entries that would write outside the work tree or into
	// .git on checkout (".", "..", ".git" and its NTFS/HFS spellings, "a/b",
	// empty names), and the .gitmodules and .gitattributes files behind
	// CVE-2018-11235, CVE-2018-17456, CVE-2019-1387, CVE-2022-23521 and
	// CVE-2024-32002 (names like "../x", URLs or paths that start with "-",
	// symlinked or oversized files).
	{"receive.fsck.hasDot", "error"},
	{"receive.fsck.hasDotdot", "error"},
	{"receive.fsck.hasDotgit", "error"},
	{"receive.fsck.fullPathname", "error"},
	{"receive.fsck.emptyName", "error"},
	{"receive.fsck.duplicateEntries", "error"},
	{"receive.fsck.treeNotSorted", "error"},
	{"receive.fsck.nullSha1", "error"},
	{"receive.fsck.gitmodulesMissing", "error"},
	{"receive.fsck.gitmodulesBlob", "error"},
	{"receive.fsck.gitmodulesLarge", "error"},
	{"receive.fsck.gitmodulesName", "error"},
	{"receive.fsck.gitmodulesPath", "error"},
	{"receive.fsck.gitmodulesSymlink", "error"},
	{"receive.fsck.gitmodulesUpdate", "error"},
	{"receive.fsck.gitmodulesUrl", "error"},
	{"receive.fsck.gitattributesMissing", "error"},
	{"receive.fsck.gitattributesBlob", "error"},
	{"receive.fsck.gitattributesLarge", "error"},
	{"receive.fsck.gitattributesLineLength", "error"},

	// Legacy flaws that old tools wrote into history which is still pushed
	// today (CVS, SVN and Mercurial imports, early git): odd timezones,
	// zero-padded dates and file modes, malformed identity lines. git reads
	// them fine and nothing on checkout depends on them, so they pass, with a
	// "remote: warning: ..." that names the object. Gitaly (GitLab) ignores
	// the first three for the same reason; the ident and date variants are
	// the same class of flaw.
	{"receive.fsck.badTimezone", "warn"},
	{"receive.fsck.missingSpaceBeforeDate", "warn"},
	{"receive.fsck.zeroPaddedFilemode", "warn"},
	{"receive.fsck.badDate", "warn"},
	{"receive.fsck.badDateOverflow", "warn"},
	{"receive.fsck.zeroPaddedDate", "warn"},
	{"receive.fsck.badEmail", "warn"},
	{"receive.fsck.missingEmail", "warn"},
	{"receive.fsck.missingNameBeforeEmail", "warn"},
	{"receive.fsck.missingSpaceBeforeEmail", "warn"},

	// Deleting the branch HEAD names would leave clones without a default
	// branch; git refuses it by default too, with a page of advice meant for
	// non-bare repositories. Change GitProject.spec.defaultBranch instead.
	{"receive.denyDeleteCurrent", "refuse"},

	// The leader's housekeeping (internal/housekeeping) packs repositories;
	// receive-pack must not also start git gc --auto, which detaches and
	// would be reparented to gitssh (PID 1 in its container) and never
	// reaped, and which could run twice at once on one repository.
	{"receive.autogc", "false"},
	// Every push is kept as a pack, never unpacked into loose objects (git's
	// default below 100 objects). A loose object is written into
	// objects/XX/, a directory git prune and repack -d remove when empty: a
	// push moving its objects out of quarantine while housekeeping ran
	// failed with "unable to migrate objects to permanent storage"
	// (TestPushesDuringRuns). objects/pack is never removed. Small packs are
	// what geometric repacking rolls up, and they keep deltas, so a push
	// takes less room than its loose objects would.
	{"receive.unpackLimit", "1"},

	// Protocol v2, which git clients use by default, serves any object in
	// the repository by its id whatever these say (checked with git 2.39.5).
	// v0 clients get the same rule rather than a restriction that any client
	// steps around by asking for v2. It also lets partial clones and
	// submodules fetch the commits they pin. The consequence, documented in
	// README: an object no ref reaches, such as a commit force-pushed away,
	// stays fetchable by id to readers until git gc prunes it.
	{"uploadpack.allowAnySHA1InWant", "true"},
	{"uploadpack.allowReachableSHA1InWant", "true"},
	{"uploadpack.allowTipSHA1InWant", "true"},
	// git archive --remote only for refs and commits, not arbitrary ids.
	{"uploadarchive.allowUnreachable", "false"},

	// Partial clone (git clone --filter=...), for monorepos and CI: off by
	// default in git ("filtering not recognized by server, ignoring"). Only
	// filters that stay cheap are allowed: blob:none and blob:limit=N only
	// leave blobs out of the same walk (bitmaps still apply), tree:0 sends
	// commits only, and combine:... of those. Refused, with git's "remote
	// error: filter '...' not supported": sparse:oid, which parses a blob of
	// the repository as sparse-checkout patterns and matches every path of
	// every tree against them (CPU and memory chosen by the client, no bitmap
	// help); tree:N with N > 0, a full tree walk to depth N for each commit
	// that saves clients little; object:type, which no git client asks for.
	// A refused filter fails the clone; the client can drop --filter.
	// Shallow fetches (--depth, --shallow-since, --shallow-exclude,
	// --deepen) need no setting: upload-pack always serves them.
	{"uploadpack.allowFilter", "true"},
	{"uploadpackfilter.allow", "false"},
	{"uploadpackfilter.blob:none.allow", "true"},
	{"uploadpackfilter.blob:limit.allow", "true"},
	{"uploadpackfilter.tree.allow", "true"},
	{"uploadpackfilter.tree.maxDepth", "0"},
	{"uploadpackfilter.combine.allow", "true"},

	// Refuse tree entries that are ".git" on NTFS or HFS+ (git~1, .GIT,
	// ".g\u200cit") wherever git checks paths. Both default to true on
	// Windows and macOS clients only.
	{"core.protectNTFS", "true"},
	{"core.protectHFS", "true"},
}

// gitArgs returns git's arguments for one command: the settings above, then
// those that depend on the server and the repository, then "SERVICE DIR".
//
//   - core.hooksPath: Config.GitHooksDir, a directory the operator controls,
//     or /dev/null (no hooks): hooks/ inside a repository, which a restored
//     backup or another tool could fill, is never used.
//   - receive.maxInputSize: the push limit in bytes (0: none); see pushLimit.
//   - safe.directory: the repository itself. The volume may be owned by
//     another uid (a restored backup, a changed runAsUser under fsGroup) and
//     git refuses such repositories otherwise. Only the one directory the
//     Authorizer picked is trusted, never "*".
func (s *Server) gitArgs(service, dir string, maxInputSize int64) []string {
	return append(s.gitConfigArgs(dir, maxInputSize), service, dir)
}

// gitConfigArgs is gitArgs without "SERVICE DIR".
func (s *Server) gitConfigArgs(dir string, maxInputSize int64) []string {
	hooks := s.cfg.GitHooksDir
	if hooks == "" {
		hooks = os.DevNull
	}
	args := make([]string, 0, 2*len(gitConfig)+8)
	for _, kv := range gitConfig {
		args = append(args, "-c", kv.key+"="+kv.value)
	}
	// Bounds derived from the pod's CPU and memory (PackSettings); git passes
	// them on to the pack-objects that upload-pack starts.
	if s.cfg.PackThreads > 0 {
		args = append(args, "-c", "pack.threads="+strconv.Itoa(s.cfg.PackThreads))
	}
	if s.cfg.PackWindowMemory > 0 {
		args = append(args, "-c", "pack.windowMemory="+strconv.FormatInt(s.cfg.PackWindowMemory, 10))
	}
	return append(args,
		"-c", "core.hooksPath="+hooks,
		"-c", "receive.maxInputSize="+strconv.FormatInt(max(maxInputSize, 0), 10),
		"-c", "safe.directory="+dir)
}

// gitEnv is the whole environment git runs with: gitenv.Env, and nothing
// from the client but a validated GIT_PROTOCOL.
func gitEnv(gitProtocol string) []string {
	env := gitenv.Env()
	if gitProtocol != "" {
		env = append(env, "GIT_PROTOCOL="+gitProtocol)
	}
	return env
}
