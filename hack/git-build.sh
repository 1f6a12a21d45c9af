#!/bin/sh
# Compiles the git release hack/git-source.sh fetched, as gitssh ships it: the
# image's first stage runs this, and so can a benchmark on the host
# (hack/bench/README.md, "git's own SHA-1"). OpenSSL's SHA-1 for the checksums of
# the files git writes (OPENSSL_SHA1_UNSAFE; object names keep the collision-
# detecting SHA-1), and only what a git server runs: no HTTP transport, Perl,
# Python, Tcl/Tk, translations or Rust. Needs gcc, make, libc6-dev, libssl-dev,
# zlib1g-dev and xz-utils.
#
#   hack/git-build.sh TARBALL PREFIX [DESTDIR]
set -eu
tarball=$(realpath "$1")
prefix=$2
destdir=${3:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -C "$work" -xf "$tarball"
cd "$work"/git-*/
make -j"$(nproc)" prefix="$prefix" DESTDIR="$destdir" \
	OPENSSL_SHA1_UNSAFE=YesPlease NO_CURL=YesPlease NO_EXPAT=YesPlease NO_TCLTK=YesPlease \
	NO_GETTEXT=YesPlease NO_PERL=YesPlease NO_PYTHON=YesPlease NO_RUST=YesPlease \
	SKIP_DASHED_BUILT_INS=YesPlease INSTALL_SYMLINKS=YesPlease INSTALL_STRIP=-s \
	install >"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; exit 1; }
# The build option is the point of building git at all: fail if it did not take.
"$destdir$prefix/bin/git" version --build-options | grep -q 'non-collision-detecting-SHA-1: SHA1_OPENSSL_UNSAFE' || {
	echo "git-build: $destdir$prefix/bin/git was built without OPENSSL_SHA1_UNSAFE" >&2
	exit 1
}
