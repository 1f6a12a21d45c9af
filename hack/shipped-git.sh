#!/usr/bin/env bash
# Builds the git the image ships (hack/git-source.sh fetches it, hack/git-build.sh
# compiles it) into the per-user cache, once per release and build script, links it
# as bin/git, and prints its bin/ directory on its last line. `make test` puts that
# first in PATH, so the tests run the git that users run; a second run finds it
# and does nothing.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_root="${GITSSH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gitssh}"

log() { echo "shipped-git: $*" >&2; }

"${repo_root}/hack/git-source.sh"
tarball="${repo_root}/bin/git-source/git.tar.xz"
# git's install prefix is compiled into it: each build has a directory of its own.
id="$(cat "${tarball}" "${repo_root}/hack/git-build.sh" | sha256sum | cut -c1-16)"
dest="${cache_root}/git/${id}"

if [[ ! -f "${dest}/.complete" ]]; then
  missing=()
  for pkg in gcc make libc6-dev libssl-dev zlib1g-dev xz-utils; do
    dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q 'install ok installed' || missing+=("${pkg}")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]} to compile git"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  log "compiling git into ${dest} (once, about 3 minutes)"
  rm -rf "${dest}"
  "${repo_root}/hack/git-build.sh" "${tarball}" "${dest}" || { rm -rf "${dest}"; exit 1; }
  touch "${dest}/.complete"
fi
mkdir -p "${repo_root}/bin"
[[ -L "${repo_root}/bin/git" || ! -e "${repo_root}/bin/git" ]] || rm -rf "${repo_root}/bin/git"
ln -sfn "${dest}" "${repo_root}/bin/git"
echo "${dest}/bin"
