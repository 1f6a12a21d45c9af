package sshserver

import (
	"fmt"

	"github.com/gitssh-dev/gitssh/internal/repostore"
)

// quotaLimit returns how many pack bytes a push into repo may send under the repository's
// quota, and the phrase that names this limit in a refusal; 0 when repo has no quota. The
// repository is measured on every push, on this replica, so that the quota holds without
// asking the API server and whichever replica took the last push. A negative limit means
// the repository has reached its quota and no push may start; what is then the reason,
// for the client.
func (s *Server) quotaLimit(repo Repository) (limit int64, what string) {
	if repo.Quota <= 0 {
		return 0, ""
	}
	used, err := repostore.DiskUsage(repo.Path)
	if err != nil {
		// git fails on such a repository too, with a message that says more than ours.
		s.log.Error(err, "Failed to measure a repository against its quota", "repository", repo.Owner+"/"+repo.Name)
		return 0, ""
	}
	left := repo.Quota - used
	if left <= 0 {
		return -1, fmt.Sprintf("repository %q uses %s of its %s quota; ask an admin of the project to raise spec.quota of its GitProject",
			repo.Owner+"/"+repo.Name, repostore.FormatSize(used), repostore.FormatSize(repo.Quota))
	}
	return left, fmt.Sprintf("the remaining %s of the repository's %s quota (GitProject spec.quota)",
		repostore.FormatSize(left), repostore.FormatSize(repo.Quota))
}
