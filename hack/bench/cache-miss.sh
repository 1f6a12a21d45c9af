#!/usr/bin/env bash
# What a pack cache miss and a hit cost the server, one clone at a time: runs one
# hack/bench/gitssh-server with the pack cache on, and per round makes a new
# commit on REPO's HEAD (so the next clone is a miss, as the first CI job after a
# push), clones it twice (a miss, then a hit), and prints each clone's server
# CPU: the server's own and its git children's (from /proc). HEAD is put back at
# the end. See hack/bench/README.md, "CI fan-out and the pack cache".
#
#   hack/bench/cache-miss.sh [ROUNDS]      # ROUNDS=3
#
# Environment:
#   REPO=fanout            fanout (97 MB) or big (201 MB), as ssh-vs-openssh.sh made them
#   BENCH_GITSSH_BIN=FILE  the server to run (default: built from this tree)
#   BENCH_OUT=hack/bench/out
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS=${1:-3}
REPO=${REPO:-fanout}
OUT=$(cd "${BENCH_OUT:-hack/bench/out}" && pwd)
SRC=$OUT/repos/bench/$REPO.git
[[ -f $SRC/.bench-complete && -f $OUT/keys/client ]] ||
	die "run hack/bench/ssh-vs-openssh.sh once first (BENCH_CASES=fanout for fanout.git): it generates $SRC"
work_dir gitssh-cache-miss
gitssh_server_bin
go build -o "$WORK/gitssh-pack-hook" ./cmd/gitssh-pack-hook

g() { git --git-dir="$SRC" "$@"; }
HEAD_BEFORE=$(g rev-parse HEAD)
trap 'cleanup; g update-ref HEAD "$HEAD_BEFORE"' EXIT
PORT=$(free_port)
start_server server "$PORT" "$WORK/gitssh-server" -listen "127.0.0.1:$PORT" -repo-root "$OUT/repos" \
	-host-key "$OUT/keys/host" -authorized-keys "$OUT/keys/client.pub" -pack-cache-dir "$WORK/pack-cache"
PID=${SERVER_PID[server]}
git_client "$OUT/keys/client" "$WORK"

ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%4.0f", (b - a) * 1000 }'; }
for round in $(seq "$ROUNDS"); do
	g update-ref HEAD "$(g -c user.name=bench -c user.email=bench@localhost commit-tree -p HEAD -m "cache-miss round $round" 'HEAD^{tree}')"
	line="round $round:"
	for kind in miss hit; do
		own0=$(cpu "$PID" own) git0=$(cpu "$PID" children)
		git clone -q --bare "ssh://git@127.0.0.1:$PORT/bench/$REPO.git" "$WORK/clone.git"
		own1=$(cpu "$PID" own) git1=$(cpu "$PID" children)
		rm -rf "$WORK/clone.git"
		line+="  $kind: gitssh $(ms "$own0" "$own1") ms + git $(ms "$git0" "$git1") ms"
	done
	echo "$line"
done
