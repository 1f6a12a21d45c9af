#!/usr/bin/env bash
# Where gitssh-server's own CPU goes on a big clone or push: runs one
# hack/bench/gitssh-server on the repositories ssh-vs-openssh.sh generated,
# does one warm-up and N clones (or pushes) of big.git with the OpenSSH
# client's defaults, and prints per operation the server's own user and
# system CPU and its git children's CPU (from /proc). See hack/bench/README.md.
#
#   hack/bench/profile-server.sh [clone|push] [N]      # N=3
#
# Environment:
#   BENCH_GITSSH_BIN=FILE  the server to run (default: built from this tree)
#   BENCH_GITSSH_FLAGS=    more gitssh-server flags
#   PROFILE=perf           also sample with perf (cpu-clock, call graphs, git
#                          children included) and print the server's samples by
#                          what they were doing (AES-GCM, socket writes, ...)
#   PROFILE=syscalls       also count the server's syscalls (perf stat, threads
#                          that exist after the warm-up)
#   BENCH_OUT=hack/bench/out
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
OP=${1:-clone}
N=${2:-3}
OUT=$(cd "${BENCH_OUT:-hack/bench/out}" && pwd)
[[ -f $OUT/repos/bench/big.git/.bench-complete && -f $OUT/keys/client ]] ||
	die "run hack/bench/ssh-vs-openssh.sh once first: it generates $OUT"
work_dir gitssh-profile
gitssh_server_bin
BIN=$WORK/gitssh-server
TARGET=$OUT/repos/bench/push-profile.git
trap 'cleanup; rm -rf "$TARGET"' EXIT
rm -rf "$TARGET" && git init -q --bare "$TARGET" # before the server starts: it serves what it finds
read -ra FLAGS <<<"${BENCH_GITSSH_FLAGS:-}"
PORT=$(free_port)
start_server server "$PORT" "$BIN" -listen "127.0.0.1:$PORT" -repo-root "$OUT/repos" -host-key "$OUT/keys/host" \
	-authorized-keys "$OUT/keys/client.pub" "${FLAGS[@]}"
PID=${SERVER_PID[server]}

git_client "$OUT/keys/client" "$WORK"
op() {
	case $OP in
	clone) git clone -q --bare "ssh://git@127.0.0.1:$PORT/bench/big.git" "$WORK/x.git" && rm -rf "$WORK/x.git" ;;
	push)
		rm -rf "$TARGET" && git init -q --bare "$TARGET"
		git -C "$OUT/src/big.git" push -q "ssh://git@127.0.0.1:$PORT/bench/push-profile.git" 'refs/heads/*:refs/heads/*'
		;;
	*) die "unknown operation $OP: clone or push" ;;
	esac
}
op # warm-up: page cache, the server's threads
ticks() { awk '{ sub(/^.*\) /, ""); print $12, $13, $14 + $15 }' "/proc/$PID/stat"; } # clock ticks: user, system, children
read -r u0 s0 k0 < <(ticks)
case ${PROFILE:-} in
perf)
	perf record -q -F 2000 -e cpu-clock -g -p "$PID" -o "$WORK/perf.data" 2>/dev/null &
	SP=$!
	;;
syscalls)
	perf stat --no-inherit -t "$(ls "/proc/$PID/task" | paste -sd,)" -x, -o "$WORK/stat" \
		-e context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_read,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_nanosleep &
	SP=$!
	;;
esac
[[ -n ${SP:-} ]] && sleep 0.5 # perf attaches
for _ in $(seq "$N"); do op; done
[[ -n ${SP:-} ]] && { kill -INT "$SP"; wait "$SP" || true; }
read -r u1 s1 k1 < <(ticks)
awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v k=$((k1 - k0)) -v n="$N" -v hz="$(getconf CLK_TCK)" -v op="$OP" 'BEGIN {
	printf "per %s: gitssh-server user %.3f s + system %.3f s = %.3f s; git %.3f s\n", op, u / hz / n, s / hz / n, (u + s) / hz / n, k / hz / n }'
case ${PROFILE:-} in
syscalls) awk -F, -v n="$N" '/^[0-9]/ { sub(/^.*sys_enter_?/, "", $3); printf "%s %.0f  ", ($3 == "" ? "syscalls" : $3), $1 / n } END { print "(per operation)" }' "$WORK/stat" ;;
perf)
	# Each sample of the server (not git) goes to the first category its stack matches.
	perf script -i "$WORK/perf.data" --comm "$(basename "$BIN")" -F ip,sym 2>/dev/null | perl -e '
		my @cats = (
			["AES-GCM (user)", qr/^\S+ \S*(gcmAes|aesEnc|aesDec|gcmSeal|gcmOpen)/],
			["garbage collection and allocation", qr/gcBgMarkWorker|gcDrain|mallocgc|bgsweep|bgscavenge|gcStart/],
			["sysmon (the runtime'\''s monitor thread)", qr/runtime\.sysmon/],
			["socket writes (kernel; loopback: also the receiver'\''s TCP)", qr/tcp_sendmsg|sock_write_iter|do_writev|spokeConn\)\.Write|netFD\)\.Write/],
			["reads of git'\''s stdout and stderr", qr/anon_pipe_read|os\.\(\*File\)\.Read/],
			["writes to git'\''s stdin", qr/anon_pipe_write|os\.\(\*File\)\.Write/],
			["socket reads and decryption (x/crypto readLoop)", qr/readLoop|tcp_recvmsg/],
			["copies (memmove)", qr/^\S+ runtime\.memmove/],
			["scheduler: park, wake, futex, epoll", qr/runtime\.(schedule|findRunnable|park_m|futex|netpoll|notesleep|notewakeup|mcall|gosched|wakep|startm|stopm|ready)/],
		);
		my (%n, $total, $kernel, @s);
		sub flush {
			return unless @s;
			my $stack = join("\n", @s);
			$total++;
			$kernel++ if $s[0] =~ /^\s*ffffffff/;
			my $c = "other";
			for (@cats) { if ($stack =~ $_->[1]) { $c = $_->[0]; last } }
			$n{$c}++;
			@s = ();
		}
		while (<>) { chomp; if (/^\s*$/) { flush() } else { s/^\s+//; s/ \(.*\)$//; push @s, $_ } }
		flush();
		printf "%d samples of gitssh-server, %.0f%% in the kernel:\n", $total, 100 * $kernel / $total;
		printf "  %5.1f%%  %s\n", 100 * $n{$_} / $total, $_ for sort { $n{$b} <=> $n{$a} } keys %n;'
	;;
esac
