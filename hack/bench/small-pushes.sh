#!/usr/bin/env bash
# A repository built by 300 small pushes, through OpenSSH's sshd (git's defaults) and
# through gitssh (every push a pack, housekeeping after the pushes), then cloned from
# each: median clone time and server CPU per clone, and housekeeping's own cost.
# See hack/bench/README.md. Same tools and conventions as ssh-vs-openssh.sh.
#
# Environment:
#   RUNS=7      clones per server (medians)
#   PUSHES=300  small pushes, each one commit touching 3 of 2,000 files
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RUNS=${RUNS:-7}
PUSHES=${PUSHES:-300}

need_sshd
need_tools git ssh ssh-keygen go perl
work_dir gitssh-pushes

log "building hack/bench/gitssh-server and hack/bench/housekeep"
go build -o "$WORK/gitssh-server" ./hack/bench/gitssh-server
go build -o "$WORK/housekeep" ./hack/bench/housekeep

bench_keys "$WORK/keys"
git_client "$WORK/keys/client" "$WORK/home"

# Two empty repositories made the same way: git's defaults for sshd, gitssh's fixed
# configuration (sshserver/gitconfig.go) for gitssh.
for s in openssh gitssh; do git init -q --bare -b main "$WORK/$s/bench/pushes.git"; done

SSHD_PORT=$(free_port)
sshd_config sshd "$SSHD_PORT" "$WORK/keys/host" "$WORK/keys/client.pub"
start_server sshd "$SSHD_PORT" /usr/sbin/sshd -D -e -f "$WORK/sshd.conf"
SSHD_PID=${SERVER_PID[sshd]}
GITSSH_PORT=$(free_port)
start_server gitssh "$GITSSH_PORT" "$WORK/gitssh-server" -listen "127.0.0.1:$GITSSH_PORT" -repo-root "$WORK/gitssh" \
	-host-key "$WORK/keys/host" -authorized-keys "$WORK/keys/client.pub"
GITSSH_PID=${SERVER_PID[gitssh]}

url() {
	case $1 in
	openssh) echo "ssh://root@127.0.0.1:$SSHD_PORT$WORK/openssh/bench/pushes.git" ;;
	gitssh) echo "ssh://git@127.0.0.1:$GITSSH_PORT/bench/pushes.git" ;;
	esac
}

# History: 2,000 files, then PUSHES commits of 3 changed files each, through fast-import.
log "generating 2,000 files and $PUSHES commits"
git init -q --bare "$WORK/src.git"
perl -e '
	my ($n, $t) = (shift, 1700000000);
	sub body { my ($f, $c) = @_; join("", map { "file $f line $_ version $c: " . ($f * 7919 + $_ * 104729 + $c) % 1000003 . "\n" } 1 .. 40) }
	for my $c (0 .. $n) {
		my $msg = "commit $c\n";
		print "commit refs/heads/main\ncommitter bench <bench\@localhost> ", $t + $c, " +0000\ndata ", length($msg), "\n$msg";
		my @files = $c == 0 ? (0 .. 1999) : map { ($c * 37 + $_ * 661) % 2000 } 0 .. 2;
		for my $f (@files) { my $b = body($f, $c); printf "M 100644 inline dir%02d/file%04d.txt\ndata %d\n%s\n", $f % 50, $f, length($b), $b }
	}' "$PUSHES" | git --git-dir="$WORK/src.git" fast-import --quiet
mapfile -t COMMITS < <(git --git-dir="$WORK/src.git" rev-list --reverse main)

for s in openssh gitssh; do
	log "$s: $((${#COMMITS[@]})) pushes, one commit each"
	t0=$(now)
	for c in "${COMMITS[@]}"; do
		git --git-dir="$WORK/src.git" push -q "$(url $s)" "$c:refs/heads/main" || die "push to $s failed"
	done
	echo "$(( ($(now) - t0) / 1000000 ))" >"$WORK/push-ms-$s"
done
sleep 1 # let sshd reap a git gc --auto it may have started

shape() { # REPO
	local d=$1
	echo "packs: $(find "$d/objects" -path "*/pack/*" -name "*.pack" | wc -l), loose objects: $(find "$d/objects" -regextype posix-extended -regex ".*/[0-9a-f]{2}/[0-9a-f]{38}" | wc -l)"
}
BEFORE_OPENSSH=$(shape "$WORK/openssh/bench/pushes.git")
BEFORE_GITSSH=$(shape "$WORK/gitssh/bench/pushes.git")

log "gitssh: housekeeping (incremental, as after pushes)"
TIMEFORMAT='%R %U %S'
HK=$( { time "$WORK/housekeep" "$WORK/gitssh/bench/pushes.git" >"$WORK/hk.out"; } 2>&1 )
AFTER_GITSSH=$(shape "$WORK/gitssh/bench/pushes.git")

run_clone() { # SERVER -> seconds
	local t0 d=$WORK/clone
	rm -rf "$d"
	t0=$(now)
	git clone -q --bare "$(url "$1")" "$d" || die "clone from $1 failed"
	since "$t0"
	rm -rf "$d"
}

log "cloning, $RUNS runs per server, interleaved"
run_clone openssh >/dev/null
run_clone gitssh >/dev/null
sleep 0.5
c0_openssh=$(cpu "$SSHD_PID")
c0_gitssh=$(cpu "$GITSSH_PID")
: >"$WORK/t-openssh"
: >"$WORK/t-gitssh"
for i in $(seq "$RUNS"); do
	if ((i % 2)); then order="openssh gitssh"; else order="gitssh openssh"; fi
	for s in $order; do run_clone "$s" >>"$WORK/t-$s"; done
done
sleep 0.5
cpu_openssh=$(awk -v a="$c0_openssh" -v b="$(cpu "$SSHD_PID")" -v n="$RUNS" 'BEGIN { printf "%.3f", (b - a) / n }')
cpu_gitssh=$(awk -v a="$c0_gitssh" -v b="$(cpu "$GITSSH_PID")" -v n="$RUNS" 'BEGIN { printf "%.3f", (b - a) / n }')
m_openssh=$(median "$WORK/t-openssh")
m_gitssh=$(median "$WORK/t-gitssh")

read -r hk_real hk_user hk_sys <<<"$HK"
{
	echo "# $PUSHES small pushes, then clones: gitssh (with housekeeping) vs OpenSSH sshd + git defaults"
	echo
	echo "$(date -u +%Y-%m-%dT%H:%MZ); medians of $RUNS interleaved clones per server after one warm-up each."
	echo
	echo "| | OpenSSH + git defaults | gitssh + housekeeping | ratio |"
	echo "|---|---:|---:|---:|"
	echo "| repository after the pushes | $BEFORE_OPENSSH | $BEFORE_GITSSH; after housekeeping: $AFTER_GITSSH | |"
	echo "| $PUSHES pushes, wall time | $(cat "$WORK/push-ms-openssh") ms | $(cat "$WORK/push-ms-gitssh") ms | $(awk -v a="$(cat "$WORK/push-ms-openssh")" -v b="$(cat "$WORK/push-ms-gitssh")" 'BEGIN { printf "%.2f", b / a }') |"
	echo "| \`git clone --bare\`, median | ${m_openssh} s | ${m_gitssh} s | $(awk -v a="$m_openssh" -v b="$m_gitssh" 'BEGIN { printf "%.2f", b / a }') |"
	echo "| server CPU per clone | ${cpu_openssh} s | ${cpu_gitssh} s | $(awk -v a="$cpu_openssh" -v b="$cpu_gitssh" 'BEGIN { if (a > 0) printf "%.2f", b / a }') |"
	echo
	echo "Housekeeping run (incremental) on gitssh's repository: ${hk_real} s wall, $(awk -v u="$hk_user" -v s="$hk_sys" 'BEGIN { printf "%.2f", u + s }') s CPU; $(cat "$WORK/hk.out")."
	echo "Machine: $(nproc) CPUs, $(git --version), OpenSSH $(dpkg-query -W -f='${Version}' openssh-server 2>/dev/null || echo '?')."
	echo "Raw clone times (s), OpenSSH / gitssh: $(paste -sd' ' "$WORK/t-openssh") / $(paste -sd' ' "$WORK/t-gitssh")"
}
