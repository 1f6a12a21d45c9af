#!/usr/bin/env bash
# Benchmark gitssh's SSH server (the real sshserver package, through
# hack/bench/gitssh-server) against OpenSSH's sshd serving the same bare
# repositories to the same git/ssh client. See hack/bench/README.md.
#
# Environment:
#   RUNS=7                 runs per case, cipher and server (medians; at least 5)
#   BENCH_OUT=hack/bench/out  cache for the generated repositories and results
#   BENCH_CIPHERS="default" the client's ciphers to measure, each in turn: "default"
#                          (the client's choice against each server's own offer) or
#                          a cipher forced on the client for both servers, e.g.
#                          "default chacha20-poly1305@openssh.com aes128-gcm@openssh.com aes128-ctr"
#                          (BENCH_CIPHER=X is BENCH_CIPHERS=X)
#   BENCH_CASES="big big-cached small push-big push-small ls-remote ls-remote-10k parallel";
#                          "fanout" (30 parallel clones of one new commit of a ~100 MB
#                          repository, OpenSSH and gitssh with the pack cache off and on)
#                          runs only when named, and only with the "default" cipher
#   FANOUT=30              clones per fan-out run
#   FANOUT_WARMUP=1        0: no warm-up fan-out per server (on a loaded machine)
#   FANOUT_SERVERS="openssh gitssh gitssh-cache"  the fan-out's servers (gitssh-cache:
#                          the pack cache on), e.g. only gitssh-cache to compare its flags
#   FANOUT_LOGINS=0        1: also log in every 20 ms during each fan-out run (login-probe/)
#                          and report the logins' p50 and p99. The clones then run at
#                          nice 19, as if they were other machines: otherwise their 60
#                          processes on this machine's cores would be most of a login's
#                          wait. The servers' CPU includes the probe's logins (sshd: processes
#                          per login): the CPU ratios are not comparable with runs without
#   BENCH_CPUPROFILE=FILE  write a CPU profile of the gitssh server
#   BENCH_GITSSH_BIN=FILE  use this prebuilt hack/bench/gitssh-server (before/after)
#   BENCH_GITSSH_GIT=DIR   put DIR (a bin/ holding git) first in the gitssh servers' PATH,
#                          e.g. the git the image ships, compiled on the host by
#                          `make shipped-git` (then DIR=$PWD/bin/git/bin); sshd and the
#                          client keep the system's git
#   BENCH_GITSSH_FLAGS=    more flags for gitssh-server, e.g. "-copy-buffer 65536"
#                          or "-ciphers chacha20-poly1305@openssh.com,aes128-gcm@openssh.com"
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=${RUNS:-7}
OUT=$(mkdir -p "${BENCH_OUT:-hack/bench/out}" && cd "${BENCH_OUT:-hack/bench/out}" && pwd)
CASES=${BENCH_CASES:-big big-cached small push-big push-small ls-remote ls-remote-10k parallel}
CIPHERS=${BENCH_CIPHERS:-${BENCH_CIPHER:-default}}
PARALLEL=20
REPOS=$OUT/repos # REPOS/bench/{big,small}.git

((RUNS >= 1)) || die "RUNS must be positive"

# --- tools ------------------------------------------------------------------
need_sshd
need_tools git ssh ssh-keygen go perl

# --- repositories, generated once -------------------------------------------
gen_big() { # 40 files x 5 MiB of random bytes over 4 commits
	local d=$REPOS/bench/big.git tmp
	[[ -f $d/.bench-complete ]] && return
	log "generating $d (~200 MB of incompressible blobs)"
	rm -rf "$d"
	git init -q --bare "$d"
	tmp=$(mktemp -d)
	for c in 0 1 2 3; do
		for i in $(seq $((c * 10)) $((c * 10 + 9))); do
			head -c $((5 << 20)) /dev/urandom >"$tmp/blob-$i.bin"
		done
		git --git-dir="$d" --work-tree="$tmp" add -A
		git --git-dir="$d" --work-tree="$tmp" -c user.name=bench -c user.email=bench@localhost \
			commit -q -m "commit $c"
	done
	rm -rf "$tmp"
	git --git-dir="$d" repack -adq
	git --git-dir="$d" prune
	touch "$d/.bench-complete"
}

gen_small() { # 20,000 small text files over 400 commits, through fast-import
	local d=$REPOS/bench/small.git
	[[ -f $d/.bench-complete ]] && return
	log "generating $d (20,000 small files, 400 commits)"
	rm -rf "$d"
	git init -q --bare "$d"
	perl -e '
		my $t = 1700000000;
		for my $c (0 .. 399) {
			my $msg = "commit $c\n";
			print "commit refs/heads/main\ncommitter bench <bench\@localhost> ", $t + $c, " +0000\n";
			print "data ", length($msg), "\n$msg";
			for my $f (0 .. 49) {
				my $n = $c * 50 + $f;
				my $body = join("", map { "line $_ of file $n: " . ($n * 7919 + $_ * 104729) % 1000003 . "\n" } 1 .. 20);
				printf "M 100644 inline dir%03d/file%05d.txt\ndata %d\n%s\n", $n % 200, $n, length($body), $body;
			}
		}' | git --git-dir="$d" fast-import --quiet
	git --git-dir="$d" symbolic-ref HEAD refs/heads/main
	git --git-dir="$d" repack -adq
	touch "$d/.bench-complete"
}

gen_fanout() { # ~100 MB: 1,000 commits, each adds 10 files of 12 KiB of base64 text and edits 5 older ones
	local d=$REPOS/bench/fanout.git
	[[ -f $d/.bench-complete ]] && return
	log "generating $d (~100 MB, 10,000 files, 1,000 commits)"
	rm -rf "$d"
	git init -q --bare "$d"
	perl -MMIME::Base64 -e '
		open(my $r, "<", "/dev/urandom") or die;
		my $t = 1700000000;
		for my $c (0 .. 999) {
			my $msg = "commit $c\n";
			print "commit refs/heads/main\ncommitter bench <bench\@localhost> ", $t + $c * 600, " +0000\n";
			print "data ", length($msg), "\n$msg";
			for my $f (0 .. 9) {
				read($r, my $raw, 9216) == 9216 or die;
				my $body = encode_base64($raw);
				printf "M 100644 inline dir%02d/file%05d.txt\ndata %d\n%s\n", $f, $c * 10 + $f, length($body), $body;
			}
			next if $c < 1;
			for my $e (1 .. 5) {
				my $n = int(rand($c * 10));
				my $body = "edit $c of file $n\n" x 40;
				printf "M 100644 inline dir%02d/edit%05d.txt\ndata %d\n%s\n", $n % 10, $n, length($body), $body;
			}
		}' | git --git-dir="$d" fast-import --quiet
	git --git-dir="$d" symbolic-ref HEAD refs/heads/main
	git --git-dir="$d" repack -adq
	touch "$d/.bench-complete"
}

gen_big
gen_small
[[ " $CASES " == *" fanout "* ]] && gen_fanout
# Push sources (local clones of the two) and one empty target per server, emptied
# again before each push. The targets exist before gitssh-server starts: it serves
# the repositories it finds then.
for r in big small; do
	[[ -d $OUT/src/$r.git ]] || git clone -q --bare "$REPOS/bench/$r.git" "$OUT/src/$r.git"
done
reset_target() { rm -rf "$REPOS/bench/push-$1.git" && git init -q --bare "$REPOS/bench/push-$1.git"; }
for s in openssh gitssh gitssh-all; do reset_target $s; done
BIG_MB=$(du -sm "$REPOS/bench/big.git" | cut -f1)
SMALL_MB=$(du -sm "$REPOS/bench/small.git" | cut -f1)

# --- keys: one client key, one host key, and 10,000 other client keys --------
bench_keys "$OUT/keys"
if [[ ! -f $OUT/keys/authorized_keys_10001 ]]; then
	log "generating an authorized_keys with 10,000 other keys, the real one last"
	# Random ed25519 public keys: well-formed, nobody holds their private half.
	perl -MMIME::Base64 -e '
		open(my $r, "<", "/dev/urandom") or die;
		my $type = "ssh-ed25519";
		for my $i (1 .. 10000) {
			read($r, my $k, 32) == 32 or die;
			my $blob = pack("N/a* N/a*", $type, $k);
			print "$type ", encode_base64($blob, ""), " other-$i\n";
		}' >"$OUT/keys/authorized_keys_10001.tmp"
	cat "$OUT/keys/client.pub" >>"$OUT/keys/authorized_keys_10001.tmp"
	mv "$OUT/keys/authorized_keys_10001.tmp" "$OUT/keys/authorized_keys_10001"
fi

# --- servers ------------------------------------------------------------------
work_dir gitssh-bench

gitssh_server_bin
# The pack cache's hook, beside the server as in the image (a gitssh-server that
# predates it runs itself as the hook).
go build -o "$WORK/gitssh-pack-hook" ./cmd/gitssh-pack-hook
# Logs in again and again during each fan-out: what the load does to logins.
FANOUT_LOGINS=${FANOUT_LOGINS:-0}
CLIENT_NICE=()
if ((FANOUT_LOGINS)); then
	go build -o "$WORK/login-probe" ./hack/bench/login-probe
	CLIENT_NICE=(nice -n 19)
fi

read -ra GITSSH_FLAGS <<<"${BENCH_GITSSH_FLAGS:-}"
PROFILE_FLAGS=() # the gitssh server only: two processes writing one profile spoil it
[[ -n ${BENCH_CPUPROFILE:-} ]] && PROFILE_FLAGS=(-cpuprofile "$BENCH_CPUPROFILE")
# What a forced cipher is measured against: gitssh offering every cipher it supports.
ALL_CIPHERS=aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr

start_sshd_at() { # NAME KEYS PORT
	# gitssh checks every pushed object; so does git under sshd here.
	sshd_config "$1" "$3" "$OUT/keys/host" "$2" GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=receive.fsckObjects GIT_CONFIG_VALUE_0=true
	start_server "$1" "$3" /usr/sbin/sshd -D -e -f "$WORK/$1.conf"
}
# The gitssh servers' PATH: BENCH_GITSSH_GIT first, if set.
GITSSH_PATH=${BENCH_GITSSH_GIT:+$BENCH_GITSSH_GIT:}$PATH
start_gitssh_at() { # NAME KEYS PORT [flags...]
	local name=$1 keys=$2 port=$3
	shift 3
	start_server "$name" "$port" env PATH="$GITSSH_PATH" "$WORK/gitssh-server" -listen "127.0.0.1:$port" -repo-root "$REPOS" \
		-host-key "$OUT/keys/host" -authorized-keys "$keys" "$@"
}
SSHD_PORT=$(free_port)
start_sshd_at sshd "$OUT/keys/client.pub" "$SSHD_PORT"
SSHD10K_PORT=$(free_port)
start_sshd_at sshd-10k "$OUT/keys/authorized_keys_10001" "$SSHD10K_PORT"
GITSSH_PORT=$(free_port)
# A fan-out of 30 clones waits for gitssh's upload bounds (2 per repository without
# the pack cache): on a busy machine, longer than the default 2m queue timeout.
start_gitssh_at gitssh "$OUT/keys/client.pub" "$GITSSH_PORT" -upload-queue-timeout 30m "${GITSSH_FLAGS[@]}" "${PROFILE_FLAGS[@]}"
GITSSH_ALL_PORT=$(free_port)
start_gitssh_at gitssh-all "$OUT/keys/client.pub" "$GITSSH_ALL_PORT" -ciphers "$ALL_CIPHERS"
GITSSH10K_PORT=$(free_port)
start_gitssh_at gitssh-10k "$OUT/keys/authorized_keys_10001" "$GITSSH10K_PORT"
GITSSHCACHE_PORT=$(free_port)
# Its own cache directory last, so that a -pack-cache-dir in BENCH_GITSSH_FLAGS (for the
# gitssh server) does not make two servers share one: each empties it at start.
start_gitssh_at gitssh-cache "$OUT/keys/client.pub" "$GITSSHCACHE_PORT" "${GITSSH_FLAGS[@]}" -pack-cache-dir "$WORK/pack-cache"

git_client "$OUT/keys/client" "$WORK/home"
SSH_BASE=$GIT_SSH_COMMAND
use_cipher() { # CIPHER: the client command for the runs that follow
	CIPHER=$1
	GIT_SSH_COMMAND=$SSH_BASE
	[[ $CIPHER == default ]] || GIT_SSH_COMMAND+=" -c $CIPHER"
	export GIT_SSH_COMMAND
}
use_cipher default

url() { # SERVER REPO
	local g=gitssh p=$GITSSH_PORT
	# A forced cipher is measured against gitssh offering every cipher.
	[[ $CIPHER == default ]] || { g=gitssh-all p=$GITSSH_ALL_PORT; }
	case $1 in
	openssh) echo "ssh://root@127.0.0.1:$SSHD_PORT$REPOS/bench/$2.git" ;;
	openssh-10k) echo "ssh://root@127.0.0.1:$SSHD10K_PORT$REPOS/bench/$2.git" ;;
	gitssh) echo "ssh://git@127.0.0.1:$p/bench/${2/push-gitssh/push-$g}.git" ;;
	gitssh-10k) echo "ssh://git@127.0.0.1:$GITSSH10K_PORT/bench/$2.git" ;;
	gitssh-cache) echo "ssh://git@127.0.0.1:$GITSSHCACHE_PORT/bench/$2.git" ;;
	esac
}
gitssh_name() { [[ $CIPHER == default ]] && echo gitssh || echo gitssh-all; }

# Both servers must give the same refs, over protocol v2.
for s in openssh openssh-10k gitssh gitssh-10k gitssh-cache; do
	for r in big small; do
		GIT_TRACE_PACKET=1 git ls-remote "$(url $s $r)" >"$WORK/ls-$s-$r" 2>"$WORK/trace-$s-$r" ||
			die "git ls-remote $(url $s $r) failed: $(tail -3 "$WORK/trace-$s-$r")"
		grep -q 'packet:.*< version 2' "$WORK/trace-$s-$r" || die "$s did not speak protocol v2"
		cmp -s "$WORK/ls-openssh-$r" "$WORK/ls-$s-$r" || die "$s advertises other refs than openssh for $r"
	done
done
# The cipher the connection used, as the client logs it.
cipher_used() { # SERVER
	local dest=root@127.0.0.1 port=$SSHD_PORT
	# As user git, which logs in: a refused login would count against 127.0.0.1 in
	# gitssh's per-source penalties. gitssh answers "unknown command": only the log matters.
	[[ $1 == gitssh ]] && dest=git@127.0.0.1 port=$(url gitssh x | sed 's/.*:\([0-9]*\)\/.*/\1/')
	{ $GIT_SSH_COMMAND -v -p "$port" "$dest" true 2>&1 || true; } | awk '/kex: server->client cipher:/ && !c++ { print $5 }'
}

# --- measurements -------------------------------------------------------------
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

run_case() { # CASE SERVER -> prints seconds
	local c=$1 s=$2 t0 t1 d=$WORK/clone target
	rm -rf "$d"
	mkdir -p "$d"
	case $c in push-*)
		target=push-$s
		[[ $s == gitssh ]] && target=push-$(gitssh_name)
		reset_target "${target#push-}"
		;;
	esac
	t0=$(now)
	case $c in
	big | small) git clone -q --bare "$(url "$s" "$c")" "$d/x.git" ;;
	big-cached) git clone -q --bare "$(url "${s/gitssh/gitssh-cache}" big)" "$d/x.git" ;;
	push-big | push-small) git -C "$OUT/src/${c#push-}.git" push -q "$(url "$s" "push-$s")" 'refs/heads/*:refs/heads/*' ;;
	ls-remote) git ls-remote "$(url "$s" small)" >/dev/null ;;
	ls-remote-10k) git ls-remote "$(url "$s-10k" small)" >/dev/null ;;
	parallel)
		local pids=() i fail=0
		for i in $(seq $PARALLEL); do
			git clone -q --bare "$(url "$s" small)" "$d/x$i.git" &
			pids+=($!)
		done
		for i in "${pids[@]}"; do wait "$i" || fail=1; done
		((fail == 0)) || die "a parallel clone from $s failed"
		;;
	esac
	t1=$(now)
	rm -rf "$d"
	since "$t0" "$t1"
}

label() {
	case $1 in
	big) echo "clone --bare, big repo (${BIG_MB} MB, 40 random 5 MiB blobs)" ;;
	big-cached) echo "clone --bare, big repo again (gitssh: pack cache on, a hit)" ;;
	small) echo "clone --bare, small-objects repo (${SMALL_MB} MB, 20,000 files, 400 commits)" ;;
	push-big) echo "push of the big repo into an empty one" ;;
	push-small) echo "push of the small-objects repo into an empty one" ;;
	ls-remote) echo "ls-remote (handshake + auth + refs)" ;;
	ls-remote-10k) echo "ls-remote, 10,001 authorized keys (real one last)" ;;
	parallel) echo "$PARALLEL parallel clones of the small repo (wall time)" ;;
	esac
}

# fanout: FANOUT clones at once of a commit made just before, so that the
# first of them finds no cached pack (CI jobs after a push). Per server and
# run: each clone's time, and the server's CPU for the whole run.
FANOUT=${FANOUT:-30}
fanout_run() { # SERVER RUN
	local s=$1 d=$WORK/fanout i pids=() fail=0
	rm -rf "$d"
	mkdir -p "$d"
	for i in $(seq "$FANOUT"); do
		(
			t0=$(now)
			"${CLIENT_NICE[@]}" git clone -q --bare "$(url "$s" fanout)" "$d/x$i.git" || exit 1
			t1=$(now)
			since "$t0" "$t1" >"$d/t$i"
		) &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i" || fail=1; done
	((fail == 0)) || die "a fan-out clone from $s failed"
	git --git-dir="$d/x1.git" fsck --no-progress --no-dangling || die "a fan-out clone from $s is broken"
	cat "$d"/t* >>"$WORK/fanout-t-$s"
	rm -rf "$d"
}
new_commit() { # a new commit on main: a new pack to make for everyone
	local g="git --git-dir=$REPOS/bench/fanout.git"
	$g update-ref refs/heads/main "$($g -c user.name=bench -c user.email=bench@localhost commit-tree -p main -m "run $1" 'main^{tree}')"
}
quantile() { # Q FILE: the Q-quantile (nearest rank) of FILE's numbers
	sort -n "$2" | awk -v q="$1" '{ v[NR] = $1 } END { i = int(NR * q + 0.999); if (i < 1) i = 1; print v[i] }'
}
p95() { quantile 0.95 "$1"; }
# A login (connect, key exchange, public-key auth) every 20 ms during the run,
# one at a time, by the probe's own client: milliseconds in WORK/login-ms-SERVER.
start_login_probe() { # SERVER
	local dest
	dest=$(url "$1" x | sed 's|^ssh://\([^@]*\)@\([^/]*\)/.*|\1 \2|')
	"$WORK/login-probe" -user "${dest% *}" -addr "${dest#* }" -key "$OUT/keys/client" -every 20ms \
		-out "$WORK/login-ms-$1" >>"$WORK/login-summary-$1" 2>&1 &
	LOGIN_PROBE=$!
}
stop_login_probe() { # SERVER
	kill -TERM "$LOGIN_PROBE"
	wait "$LOGIN_PROBE" || die "the login probe failed against $1: $(tail -2 "$WORK/login-summary-$1")"
	! grep -q 'failures [1-9]' "$WORK/login-summary-$1" || die "logins failed during a fan-out from $1: $(tail -2 "$WORK/login-summary-$1")"
}
FANOUT_SERVERS=${FANOUT_SERVERS:-openssh gitssh gitssh-cache}
for s in $FANOUT_SERVERS; do [[ " openssh gitssh gitssh-cache " == *" $s "* ]] || die "FANOUT_SERVERS: no server $s"; done
FANOUT_DONE=0
declare -A FANOUT_PID=([openssh]=sshd [gitssh]=gitssh [gitssh-cache]=gitssh-cache)
fanout_case() { # with the default cipher only
	log "case fanout, cipher default ($CIPHER_OPENSSH / $CIPHER_GITSSH): $FANOUT parallel clones, $RUNS runs per server, interleaved"
	FANOUT_CIPHER="$CIPHER_OPENSSH / $CIPHER_GITSSH"
	if ((${FANOUT_WARMUP:-1})); then
		new_commit warm-up
		for s in $FANOUT_SERVERS; do fanout_run "$s" 0; done
	fi
	for s in $FANOUT_SERVERS; do : >"$WORK/fanout-t-$s"; : >"$WORK/fanout-cpu-$s"; : >"$WORK/fanout-wall-$s"; : >"$WORK/login-ms-$s"; done
	for i in $(seq "$RUNS"); do
		order=$FANOUT_SERVERS
		((i % 2)) || order=$(echo "$FANOUT_SERVERS" | tr ' ' '\n' | tac | tr '\n' ' ')
		for s in $order; do
			new_commit "$i-$s"
			sleep 0.5 # let sshd reap its children
			c0=$(cpu "${SERVER_PID[${FANOUT_PID[$s]}]}")
			((FANOUT_LOGINS)) && start_login_probe "$s"
			t0=$(now)
			fanout_run "$s" "$i"
			t1=$(now)
			((FANOUT_LOGINS)) && stop_login_probe "$s"
			sleep 0.5
			awk -v a="$c0" -v b="$(cpu "${SERVER_PID[${FANOUT_PID[$s]}]}")" 'BEGIN { printf "%.2f\n", b - a }' >>"$WORK/fanout-cpu-$s"
			since "$t0" "$t1" >>"$WORK/fanout-wall-$s"
		done
	done
	FANOUT_DONE=1
}
if [[ " $CASES " == *" fanout "* && " $CIPHERS " != *" default "* ]]; then
	log "case fanout runs only with the default cipher, and BENCH_CIPHERS has no \"default\": skipped"
fi

per_run() { awk -v a="$1" -v b="$2" -v n="$RUNS" 'BEGIN { printf "%.3f\n", (b - a) / n }'; }

ROWS=()
for cipher in $CIPHERS; do
	use_cipher "$cipher"
	CIPHER_OPENSSH=$(cipher_used openssh)
	CIPHER_GITSSH=$(cipher_used gitssh)
	[[ -n $CIPHER_OPENSSH && -n $CIPHER_GITSSH ]] || die "no connection with cipher $cipher"
	if [[ $cipher == default && " $CASES " == *" fanout "* ]]; then
		fanout_case
	fi
	for c in $CASES; do
		[[ $c == fanout ]] && continue
		label "$c" >/dev/null
		[[ $cipher == default || $c != *ls-remote* && $c != parallel && $c != big-cached ]] || continue # connection and cache cases: default only
		k=$c@$cipher
		ROWS+=("$k")
		log "case $c, cipher $cipher ($CIPHER_OPENSSH / $CIPHER_GITSSH): $RUNS runs per server, interleaved"
		echo "$CIPHER_OPENSSH / $CIPHER_GITSSH" >"$WORK/cipher-$k"
		: >"$WORK/t-$k-openssh"
		: >"$WORK/t-$k-gitssh"
		run_case "$c" openssh >/dev/null # warm-up: page cache, first connection
		run_case "$c" gitssh >/dev/null
		[[ $c == *-10k ]] && sfx=-10k || sfx=
		gname=$(gitssh_name)
		[[ -n $sfx ]] && gname=gitssh-10k
		[[ $c == big-cached ]] && gname=gitssh-cache
		sleep 0.5 # let sshd reap its children
		o0=$(cpu "${SERVER_PID[sshd$sfx]}")
		g0=$(cpu "${SERVER_PID[$gname]}" own)
		k0=$(cpu "${SERVER_PID[$gname]}" children)
		for i in $(seq "$RUNS"); do
			# Alternate which server goes first, so neither always follows the other.
			if ((i % 2)); then order="openssh gitssh"; else order="gitssh openssh"; fi
			for s in $order; do run_case "$c" "$s" >>"$WORK/t-$k-$s"; done
		done
		sleep 0.5
		per_run "$o0" "$(cpu "${SERVER_PID[sshd$sfx]}")" >"$WORK/cpu-$k-openssh"
		per_run "$g0" "$(cpu "${SERVER_PID[$gname]}" own)" >"$WORK/cpu-$k-gitssh-own"
		per_run "$k0" "$(cpu "${SERVER_PID[$gname]}" children)" >"$WORK/cpu-$k-gitssh-git"
	done
done

# --- report -------------------------------------------------------------------
fmt() { awk -v s="$1" 'BEGIN { if (s < 1) printf "%.0f ms", s * 1000; else printf "%.2f s", s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%.2f", b / a; else print "-" }'; }
{
	echo "# gitssh vs OpenSSH sshd"
	echo
	echo "$(date -u +%Y-%m-%dT%H:%MZ); medians of $RUNS interleaved runs per server after one warm-up each$( ((FANOUT_DONE)) && { ((${FANOUT_WARMUP:-1})) && echo " (fanout: also)" || echo " (fanout: none)"; }); load average before: $LOAD0, after: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "client: \`${SSH_BASE//$OUT/OUT} [-c CIPHER]\`; gitssh-server flags: \`${GITSSH_FLAGS[*]:-(defaults)}\`"
	echo "git under gitssh: $(PATH=$GITSSH_PATH git version) ($(PATH=$GITSSH_PATH git version --build-options | awk -F': ' '/^SHA-1:|^non-collision/ { printf "%s%s: %s", n++ ? ", " : "", $1, $2 }')); under sshd and in the client: $(git version)"
	echo
	echo "| case | client cipher (OpenSSH / gitssh) | OpenSSH | gitssh | ratio | server CPU OpenSSH | server CPU gitssh (own + git) | CPU ratio |"
	echo "|---|---|---:|---:|---:|---:|---:|---:|"
	for k in "${ROWS[@]}"; do
		c=${k%%@*}
		a=$(median "$WORK/t-$k-openssh")
		b=$(median "$WORK/t-$k-gitssh")
		co=$(cat "$WORK/cpu-$k-openssh")
		cg=$(cat "$WORK/cpu-$k-gitssh-own")
		ck=$(cat "$WORK/cpu-$k-gitssh-git")
		ct=$(awk -v a="$cg" -v b="$ck" 'BEGIN { print a + b }')
		echo "| $(label "$c") | $(cat "$WORK/cipher-$k") | $(fmt "$a") | $(fmt "$b") | $(ratio "$a" "$b") | $(fmt "$co") | $(fmt "$ct") ($(fmt "$cg") + $(fmt "$ck")) | $(ratio "$co" "$ct") |"
	done
	if ((FANOUT_DONE)); then
		echo
		echo "$FANOUT parallel \`git clone --bare\` of one new commit of a $(du -sm "$REPOS/bench/fanout.git" | cut -f1) MB repository (1,000 commits, 10,000 files); $RUNS runs per server; client cipher (OpenSSH / gitssh): $FANOUT_CIPHER:"
		echo
		logins_head='' logins_rule=''
		((FANOUT_LOGINS)) && logins_head=" logins during the runs: p50 / p99 (count) |" logins_rule="---:|"
		echo "| server | median clone | p95 clone | median wall time of the run | server CPU per run (median) | CPU / OpenSSH's |$logins_head"
		echo "|---|---:|---:|---:|---:|---:|$logins_rule"
		base=0
		[[ " $FANOUT_SERVERS " == *" openssh "* ]] && base=$(median "$WORK/fanout-cpu-openssh")
		for s in $FANOUT_SERVERS; do
			cpu_s=$(median "$WORK/fanout-cpu-$s")
			case $s in openssh) name="OpenSSH sshd" ;; gitssh) name="gitssh, pack cache off" ;; gitssh-cache) name="gitssh, pack cache on" ;; esac
			logins=''
			((FANOUT_LOGINS)) && logins=" $(quantile 0.5 "$WORK/login-ms-$s") / $(quantile 0.99 "$WORK/login-ms-$s") ms ($(wc -l <"$WORK/login-ms-$s")) |"
			echo "| $name | $(fmt "$(median "$WORK/fanout-t-$s")") | $(fmt "$(p95 "$WORK/fanout-t-$s")") | $(fmt "$(median "$WORK/fanout-wall-$s")") | $(fmt "$cpu_s") | $(ratio "$base" "$cpu_s") |$logins"
		done
	fi
	echo
	echo "Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr)"
	echo "Versions: $(git --version); OpenSSH server $(dpkg-query -W -f='${Version}' openssh-server 2>/dev/null || echo '?'), client $(ssh -V 2>&1); $(go version | cut -d' ' -f3); $(go list -m golang.org/x/crypto)"
	echo "Server CPU = user+system seconds per run of the server process and its reaped children (sshd's per-connection processes; git on both sides), averaged over the measured runs. For gitssh it is split into the server's own and git's."
	echo "A forced cipher is measured against a gitssh offering every cipher it supports; \"default\" against each server's own offer."
	echo
	echo "Raw times (s), OpenSSH / gitssh:"
	echo
	for k in "${ROWS[@]}"; do
		echo "- $k: $(paste -sd' ' "$WORK/t-$k-openssh") / $(paste -sd' ' "$WORK/t-$k-gitssh")"
	done
	if ((FANOUT_DONE)); then
		for s in $FANOUT_SERVERS; do
			echo "- fanout $s: server CPU per run $(paste -sd' ' "$WORK/fanout-cpu-$s"); wall $(paste -sd' ' "$WORK/fanout-wall-$s")"
		done
	fi
} | tee "$OUT/results.md"
log "wrote $OUT/results.md"
