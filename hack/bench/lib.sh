# Shared by hack/bench/*.sh: a work directory whose servers stop at exit, OpenSSH's sshd
# and gitssh-server on loopback ports, the client both get, and small measuring helpers.
# Sourced, not run; every script runs from the repository's root.
# shellcheck shell=bash

REPO_ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO_ROOT_DIR" || exit 1

log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 1; }

need_tools() { # TOOL...
	local t
	for t; do command -v "$t" >/dev/null || die "$t is needed"; done
}

need_sshd() {
	if [[ ! -x /usr/sbin/sshd ]]; then
		log "installing openssh-server (the system service is not started)"
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null; } ||
			die "installing openssh-server failed; install it by hand and run again"
	fi
}

# work_dir NAME [SIGNAL]: WORK, a new directory removed at exit, and PIDS, the servers
# stopped then with SIGNAL (TERM; INT lets `perf record` write its data).
work_dir() {
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
	PIDS=()
	STOP_SIGNAL=${2:-TERM}
	trap cleanup EXIT
	trap 'exit 130' INT TERM
}
stop_servers() {
	local p
	for p in "${PIDS[@]}"; do kill "-$STOP_SIGNAL" "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	PIDS=()
}
cleanup() {
	stop_servers
	rm -rf "$WORK"
}

free_port() {
	local p
	for _ in $(seq 50); do
		p=$((20000 + RANDOM % 20000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
	done
	die "no free port found"
}

wait_port() { # PORT PID
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
		kill -0 "$2" 2>/dev/null || die "server on port $1 exited; see $WORK/*.log"
		sleep 0.1
	done
	die "server on port $1 did not start"
}

declare -A SERVER_PID
# start_server NAME PORT COMMAND...: runs COMMAND, its stderr in WORK/NAME.log, until
# cleanup, and waits for PORT. Call it in the main shell (not in $(...)) so that
# PIDS and SERVER_PID[NAME] keep it.
start_server() {
	local name=$1 port=$2
	shift 2
	"$@" 2>"$WORK/$name.log" &
	PIDS+=($!)
	# shellcheck disable=SC2034 # the scripts read it
	SERVER_PID[$name]=$!
	wait_port "$port" $!
}

# sshd_config NAME PORT HOST_KEY AUTHORIZED_KEYS [VAR=VALUE...]: writes WORK/NAME.conf,
# for `sshd -D -e -f` serving git on 127.0.0.1 as root, with VARs set for the commands.
sshd_config() {
	local name=$1 port=$2 host_key=$3 keys=$4
	shift 4
	cat >"$WORK/$name.conf" <<-EOF
		ListenAddress 127.0.0.1
		Port $port
		HostKey $host_key
		PidFile none
		AuthorizedKeysFile $keys
		PubkeyAuthentication yes
		PasswordAuthentication no
		KbdInteractiveAuthentication no
		UsePAM no
		StrictModes no
		PermitRootLogin prohibit-password
		AcceptEnv GIT_PROTOCOL
		# SHLVL=1: bash, which sshd runs the command with, then skips ~/.bashrc
		# (a git user's shell has none to run; root's here may start pyenv).
		# sshd takes only its first SetEnv line.
		SetEnv SHLVL=1${*:+ $*}
		MaxStartups 64
		UseDNS no
		PrintMotd no
		LogLevel ERROR
	EOF
	mkdir -p /run/sshd
}

# bench_keys DIR: DIR/client and DIR/host, ed25519 key pairs, made once.
bench_keys() {
	if [[ ! -f $1/client ]]; then
		mkdir -p "$1"
		ssh-keygen -q -t ed25519 -N '' -C bench-client -f "$1/client"
		ssh-keygen -q -t ed25519 -N '' -C bench-host -f "$1/host"
	fi
	chmod 600 "$1/client" "$1/host"
}

# gitssh_server_bin: WORK/gitssh-server, BENCH_GITSSH_BIN's copy or built from this tree.
gitssh_server_bin() {
	if [[ -n ${BENCH_GITSSH_BIN:-} ]]; then
		cp "$BENCH_GITSSH_BIN" "$WORK/gitssh-server"
	else
		log "building hack/bench/gitssh-server"
		go build -o "$WORK/gitssh-server" ./hack/bench/gitssh-server
	fi
}

# ssh_client KEY: the same client command for both servers. KEX is pinned because
# OpenSSH 9.2 would pick sntrup761x25519 from sshd, which gitssh does not offer.
ssh_client() {
	echo "ssh -F /dev/null -i $1 -o IdentitiesOnly=yes -o ControlMaster=no \
 -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
 -o HostKeyAlgorithms=ssh-ed25519 -o KexAlgorithms=curve25519-sha256"
}
# git_client KEY HOME: git, in this shell and its children, connects with ssh_client
# KEY and reads no configuration but HOME's.
git_client() {
	GIT_SSH_COMMAND=$(ssh_client "$1")
	export GIT_SSH_COMMAND GIT_SSH_VARIANT=ssh GIT_CONFIG_NOSYSTEM=1 HOME=$2
	mkdir -p "$HOME"
}

now() { date +%s%N; }
since() { awk -v a="$1" -v b="${2:-$(now)}" 'BEGIN { printf "%.4f\n", (b - a) / 1e9 }'; } # T0 [T1]: seconds between two now()s

# cpu PID [own|children|all]: CPU seconds used by the server process itself, by
# its reaped children (sshd's per-connection processes, git under both), or both,
# from /proc/PID/stat.
cpu() {
	awk -v hz="$(getconf CLK_TCK)" -v w="${2:-all}" '{ sub(/^.*\) /, "");
		own = $12 + $13; kids = $14 + $15
		printf "%.2f\n", (w == "own" ? own : w == "children" ? kids : own + kids) / hz }' "/proc/$1/stat"
}

median() { sort -n "$1" | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
