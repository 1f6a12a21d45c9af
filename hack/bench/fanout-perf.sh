#!/usr/bin/env bash
# Where a pack cache hit's CPU goes, per process: OpenSSH's sshd and gitssh
# (pack cache on) each run under `perf record`, which follows every process
# they start; FANOUT clones at once of one commit, all of them cache hits (one
# clone before fills the cache and the page cache), are sampled. Prints CPU
# per clone of each kind of process, and of the gitssh server's own work. See
# hack/bench/README.md, "CI fan-out and the pack cache".
#
# Needs perf, and the repositories and keys of a previous
# `BENCH_CASES=fanout hack/bench/ssh-vs-openssh.sh` in BENCH_OUT.
#   FANOUT=10  BENCH_OUT=hack/bench/out  BENCH_GITSSH_BIN=FILE (a prebuilt gitssh-server)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
OUT=$(cd "${BENCH_OUT:-hack/bench/out}" && pwd)
REPOS=$OUT/repos
N=${FANOUT:-10}
[[ -f $REPOS/bench/fanout.git/.bench-complete ]] || die "run BENCH_CASES=fanout hack/bench/ssh-vs-openssh.sh once first"
need_tools perf

work_dir gitssh-perf INT
gitssh_server_bin
go build -o "$WORK/gitssh-pack-hook" ./cmd/gitssh-pack-hook

SSHD_PORT=$(free_port)
sshd_config sshd "$SSHD_PORT" "$OUT/keys/host" "$OUT/keys/client.pub"
mkfifo "$WORK/ctl-openssh" "$WORK/ctl-gitssh"
record() { # NAME PORT COMMAND...: sampling starts disabled, switched by the NAME fifo
	local name=$1 port=$2
	shift 2
	start_server "$name" "$port" perf record -q -F 997 -g -D -1 --control "fifo:$WORK/ctl-$name" -o "$WORK/$name.data" -- "$@"
}
record openssh "$SSHD_PORT" /usr/sbin/sshd -D -e -f "$WORK/sshd.conf"
GITSSH_PORT=$(free_port)
record gitssh "$GITSSH_PORT" "$WORK/gitssh-server" -listen "127.0.0.1:$GITSSH_PORT" -repo-root "$REPOS" -host-key "$OUT/keys/host" \
	-authorized-keys "$OUT/keys/client.pub" -pack-cache-dir "$WORK/pack-cache"
exec 7>"$WORK/ctl-openssh" 8>"$WORK/ctl-gitssh"

git_client "$OUT/keys/client" "$WORK"
g="git --git-dir=$REPOS/bench/fanout.git"
$g update-ref refs/heads/main "$($g -c user.name=bench -c user.email=bench@localhost commit-tree -p main -m "perf $(date +%s)" 'main^{tree}')"
declare -A URL=([openssh]="ssh://root@127.0.0.1:$SSHD_PORT$REPOS/bench/fanout.git" [gitssh]="ssh://git@127.0.0.1:$GITSSH_PORT/bench/fanout.git")
declare -A FD=([openssh]=7 [gitssh]=8)
for s in openssh gitssh; do
	git clone -q --bare "${URL[$s]}" "$WORK/warm.git"
	rm -rf "$WORK/warm.git"
	echo enable >&"${FD[$s]}"
	pids=()
	for i in $(seq "$N"); do
		git clone -q --bare "${URL[$s]}" "$WORK/$s-$i.git" &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p"; done
	echo disable >&"${FD[$s]}"
	rm -rf "$WORK/$s"-*.git
done
exec 7>&- 8>&-
stop_servers # perf writes its data

echo "CPU per clone (ms; perf samples at 997 Hz) of $N simultaneous clones, all cache hits; load average $(cut -d' ' -f1-3 /proc/loadavg)"
# The gitssh server is the process with the most samples; other gitssh-* are hooks.
server=$(perf script -i "$WORK/gitssh.data" -F pid 2>/dev/null | sort | uniq -c | sort -n | tail -1 | awk '{ print $2 }')
for s in openssh gitssh; do
	perf script -i "$WORK/$s.data" -F comm,pid 2>/dev/null | awk -v s=$s -v server="$server" -v n="$N" '
		{ k = $1; if (s == "gitssh") k = $2 == server ? "gitssh server" : $1 ~ /^gitssh/ ? "hook" : "git upload-pack";
		  else if (k == "git") k = "git pack-objects"; else if (k != "sshd" && k != "git-upload-pack") k = "shell and the like"
		  c[k]++; t++ }
		END { for (k in c) printf "| %s | %s | %.0f |\n", s, k, c[k] / n; printf "| %s | total | %.0f |\n", s, t / n }' | sort
done
echo "gitssh server by what it does:"
perf script -i "$WORK/gitssh.data" --pid "$server" -F ip,sym 2>/dev/null | awk -v n="$N" 'BEGIN { RS = "" }
	{ k = "other"
	  if (/packcache/) k = "pack cache: file to upload-pack (splice)"
	  else if (/gcmAes/) k = "AES-GCM"
	  else if (/writePacket|ssh\.\(\*channel\)\.Write/) k = "SSH packets out: copies, write(2)"
	  else if (/copyCounting/) k = "reading upload-pack'"'"'s pipe"
	  else if (/runtime\.(schedule|findRunnable|park_m|mcall|gcBgMark|gcDrain|usleep|futex|notesleep|stopm|startm|wakep|sysmon)/) k = "Go scheduler and GC"
	  else if (/ssh\.\(\*handshakeTransport\)|readLoop|mux/) k = "SSH packets in"
	  c[k]++; t++ }
	END { for (k in c) printf "| %s | %.0f | %.0f%% |\n", k, c[k] / n, 100 * c[k] / t }' | sort -t'|' -k3 -n -r
