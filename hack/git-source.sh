#!/usr/bin/env bash
# Fetches the git release the image builds (Dockerfile, stage "git") into
# bin/git-source/git.tar.xz, once, and checks it against the pinned SHA-256.
#
# gitssh ships its own git, as GitLab's Gitaly does, for one build option that
# no distribution's package sets: OPENSSL_SHA1_UNSAFE, which gives git OpenSSL's
# SHA-1 for the checksums of the files it writes (the trailer of every pack it
# sends or receives), while object names keep the collision-detecting SHA-1.
# Those checksums were most of git's CPU in a clone: pack-objects for a 201 MB
# clone took 0.46-0.65 s of CPU with Debian's git and 0.13 s with this build
# (hack/bench/README.md, "git's own SHA-1").
#
# To move to a new git release: set GIT_VERSION and GIT_SHA256 (and the snapshot
# address, by the file's SHA-1) to Debian's orig tarball of it, then `make image`.
set -euo pipefail

GIT_VERSION=2.55.0
GIT_SHA256=457fdb04dc8728e007d4688695e6912e6f680727920f2a40bf11eacc17505357
# Debian's pool holds a release while it is in a suite; snapshot.debian.org keeps
# every file it ever held, by the file's SHA-1.
urls=(
  "https://deb.debian.org/debian/pool/main/g/git/git_${GIT_VERSION}.orig.tar.xz"
  "https://snapshot.debian.org/file/463b58df8b3dc512abf065865011d09d661421d5"
)

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${repo_root}/bin/git-source"
out="${dir}/git.tar.xz"

log() { echo "git-source: $*" >&2; }

if [[ -f "${out}" ]] && echo "${GIT_SHA256}  ${out}" | sha256sum -c --status; then
  exit 0
fi
command -v curl >/dev/null || {
  log "installing curl"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
}
mkdir -p "${dir}"
for url in "${urls[@]}"; do
  log "fetching git ${GIT_VERSION} from ${url}"
  if curl -fsSL --retry 3 -o "${out}.tmp" "${url}"; then
    if echo "${GIT_SHA256}  ${out}.tmp" | sha256sum -c --status; then
      mv "${out}.tmp" "${out}"
      exit 0
    fi
    log "${url} is not the pinned git ${GIT_VERSION} (SHA-256 differs)"
  fi
done
rm -f "${out}.tmp"
log "could not fetch git ${GIT_VERSION}; put the release tarball (SHA-256 ${GIT_SHA256}) at ${out}"
exit 1
