# shellcheck shell=bash disable=SC2034
# Shared settings of slurm/start.sh and slurm/stop.sh (sourced, not run; the variables are used there).
# Environment knobs:
#   LGE_SLURM_DIR        runtime folder (default /tmp/lge-slurm); everything the cluster writes lives here
#   LGE_SLURM_PORT_BASE  first of four loopback TCP ports: slurmctld, slurmd, slurmdbd, mariadb (default 16817)
#   LGE_SLURM_GPUS       fake GPUs on the node (default 2; 0 = none)
#   LGE_SLURM_MAX_TIME   partition MaxTime in minutes (default 120)
#   LGE_SLURM_USERS      extra user names to register in the account (root and $SUDO_USER always are)

# The daemons live in /usr/sbin, which a non-login root shell may not have on its PATH.
export PATH="$PATH:/usr/sbin:/sbin"
RUN_DIR=${LGE_SLURM_DIR:-/tmp/lge-slurm}
RUN_DIR=${RUN_DIR%/}
PORT_BASE=${LGE_SLURM_PORT_BASE:-16817}
CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
DB_PORT=$((PORT_BASE + 3))
CLUSTER=lge
ACCOUNT=lge
NODE=lgenode
PARTITION=debug
MARKER="$RUN_DIR/.lge-slurm"
MUNGE_SOCKET="$RUN_DIR/munge/munge.socket"
export SLURM_CONF="$RUN_DIR/etc/slurm.conf"

log() { echo "slurm: $*"; }
die() {
    echo "slurm: error: $*" >&2
    exit 1
}

# Pid from a pid file if that process is alive and is the expected program (pid files can be stale).
live_pid() {
    local file=$1 name=$2 pid comm
    [[ -r "$file" ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n "$pid" && -r "/proc/$pid/comm" ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ "$comm" == "$name"* ]] || return 1
    # A killed daemon stays a zombie until it is reaped: that is not alive.
    [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 1
    echo "$pid"
}

# Wait until a command succeeds: wait_for SECONDS WHAT CMD... (WHAT only documents the call).
wait_for() {
    local seconds=$1
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die "run as root (sudo bash $0): the daemons need root to start jobs as any user"
}
