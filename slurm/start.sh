#!/usr/bin/env bash
# Start the single-node test cluster on loopback: munged, MariaDB, slurmdbd, slurmctld, slurmd.
# Idempotent: a healthy running cluster is left alone; anything else (stale pid files, a half-started or
# crashed cluster, an old runtime folder) is stopped and started afresh. Prints the environment to use and
# writes it to $LGE_SLURM_DIR/env.sh (`source /tmp/lge-slurm/env.sh`). See slurm/README.md.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=slurm/common.sh
source "$HERE/common.sh"

print_env() {
    cat "$RUN_DIR/env.sh"
    log "cluster '$CLUSTER' up: partition $PARTITION, node $NODE ($CPUS CPUs, ${MEMORY_MB} MB, $GPUS fake GPUs)"
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1; }

# What the running cluster was rendered from: a change (templates, scripts, knobs) means a restart.
fingerprint() {
    {
        cat "$HERE"/templates/* "$HERE/start.sh" "$HERE/common.sh"
        echo "$CPUS $MEMORY_MB $GPUS ${LGE_SLURM_MAX_TIME:-} ${LGE_SLURM_USERS:-} ${SUDO_USER:-} $PORT_BASE"
    } | sha256sum | cut -c1-16
}

is_healthy() {
    [[ -f "$RUN_DIR/env.sh" && "$(cat "$RUN_DIR/fingerprint" 2>/dev/null)" == "$(fingerprint)" ]] || return 1
    live_pid "$RUN_DIR/munge/munged.pid" munged >/dev/null || return 1
    live_pid "$RUN_DIR/pid/mariadb.pid" mariadbd >/dev/null || return 1
    live_pid "$RUN_DIR/pid/slurmdbd.pid" slurmdbd >/dev/null || return 1
    live_pid "$RUN_DIR/pid/slurmctld.pid" slurmctld >/dev/null || return 1
    live_pid "$RUN_DIR/pid/slurmd.pid" slurmd >/dev/null || return 1
    [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]
}

detect_node() {
    local line
    line=$(slurmd -C | head -n 1)
    CPUS=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$line")
    local mem
    mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$line")
    [[ -n "$CPUS" && -n "$mem" ]] || die "cannot read CPUs/RealMemory from 'slurmd -C': $line"
    # Slightly under the measured total so slurmd never finds less memory than configured (node would drain).
    MEMORY_MB=$((mem * 99 / 100))
    MEM_PER_CPU_MB=$((MEMORY_MB / CPUS))
    GPUS=${LGE_SLURM_GPUS:-2}
}

render() {
    local src=$1 dst=$2
    sed -e "s|@RUN_DIR@|$RUN_DIR|g" -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@NODE@|$NODE|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" -e "s|@DBD_PORT@|$DBD_PORT|g" \
        -e "s|@DB_PORT@|$DB_PORT|g" -e "s|@DB_PASS@|$DB_PASS|g" -e "s|@MUNGE_SOCKET@|$MUNGE_SOCKET|g" \
        -e "s|@CPUS@|$CPUS|g" -e "s|@MEMORY_MB@|$MEMORY_MB|g" -e "s|@MEM_PER_CPU_MB@|$MEM_PER_CPU_MB|g" \
        -e "s|@GPUS@|$GPUS|g" -e "s|@GPU_LAST@|$((GPUS - 1))|g" \
        -e "s|@MAX_TIME@|${LGE_SLURM_MAX_TIME:-120}|g" "$HERE/templates/$src" >"$dst"
    if [[ "$GPUS" -eq 0 ]]; then
        sed -i -e 's/ Gres=gpu:0//' -e '/^AccountingStorageTRES=/d' -e '/^GresTypes=/d' "$dst"
        [[ "$src" != gres.conf ]] || sed -i '/^NodeName=/d' "$dst"
    fi
}

check_ports() {
    local port
    for port in "$CTLD_PORT" "$SLURMD_PORT" "$DBD_PORT" "$DB_PORT"; do
        if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
            die "port $port is already in use: stop what listens there or set LGE_SLURM_PORT_BASE"
        fi
    done
}

# With NoCtldInAddrAny/NoInAddrAny the Slurm daemons bind to the address this host name resolves to.
check_hostname() {
    local host addr
    host=$(hostname)
    addr=$(getent ahostsv4 "$host" | awk 'NR == 1 {print $1}')
    # In CI (a throw-away machine) the host name is pointed at loopback instead of refusing.
    if [[ "$addr" != 127.* && ( "${CI:-}" == true || "${LGE_SLURM_FIX_HOSTS:-}" == 1 ) && -w /etc/hosts ]]; then
        echo "127.0.0.1 $host" >>/etc/hosts
        addr=$(getent ahostsv4 "$host" | awk 'NR == 1 {print $1}')
    fi
    [[ "$addr" == 127.* ]] || die "host name '$host' resolves to '${addr:-nothing}', not to loopback: the daemons \
would listen there. Add '127.0.0.1 $host' to /etc/hosts"
}

# Every listening socket of the cluster's daemons must be on loopback; stop everything otherwise.
check_listeners() {
    local pids=() name file pid bad
    for name in slurmctld slurmd slurmdbd mariadb; do
        file="$RUN_DIR/pid/$name.pid"
        pid=$(live_pid "$file" "${name/mariadb/mariadbd}") && pids+=("$pid")
    done
    bad=$(ss -Hltnp | grep -E "pid=($(
        IFS='|'
        echo "${pids[*]}"
    ))," | awk '$4 !~ /^(127\.|\[::1\])/ {print $4, $6}') || true
    if [[ -n "$bad" ]]; then
        bash "$HERE/stop.sh" >/dev/null
        die "a daemon listened outside loopback, cluster stopped: $bad"
    fi
}

make_dirs() {
    [[ "$RUN_DIR" == /* && "$RUN_DIR" != / ]] || die "LGE_SLURM_DIR must be an absolute folder, got '$RUN_DIR'"
    if [[ -e "$RUN_DIR" ]]; then
        [[ -f "$MARKER" ]] || die "$RUN_DIR exists and is not a test-cluster folder: remove it or set LGE_SLURM_DIR"
        rm -rf "$RUN_DIR"
    fi
    install -d -m 755 "$RUN_DIR" "$RUN_DIR"/{etc,log,pid,dev,state,state/ctld,state/slurmd}
    touch "$MARKER"
    install -d -m 755 -o munge -g munge "$RUN_DIR/munge"
    install -d -m 700 -o munge -g munge "$RUN_DIR/munge/key"
    install -d -m 750 -o mysql -g mysql "$RUN_DIR/mysql" "$RUN_DIR/mysql/data"
    install -d -m 755 -o mysql -g mysql "$RUN_DIR/mysql/run"
    chown mysql:mysql "$RUN_DIR/log" "$RUN_DIR/pid"
    chmod 755 "$RUN_DIR/log" "$RUN_DIR/pid"
}

# slurmd only hands out GPUs whose File= is a device node: null devices (1,3) stand in for /dev/nvidia*.
make_fake_gpus() {
    local i
    for ((i = 0; i < GPUS; i++)); do
        mknod -m 666 "$RUN_DIR/dev/gpu$i" c 1 3 2>/dev/null || touch "$RUN_DIR/dev/gpu$i"
    done
}

start_munge() {
    # A private key: jobs of this cluster can never be authenticated by another munge realm.
    dd if=/dev/urandom of="$RUN_DIR/munge/key/munge.key" bs=1024 count=1 status=none
    chown munge:munge "$RUN_DIR/munge/key/munge.key"
    chmod 400 "$RUN_DIR/munge/key/munge.key"
    runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$RUN_DIR/munge/key/munge.key" \
        --pid-file="$RUN_DIR/munge/munged.pid" --log-file="$RUN_DIR/munge/munged.log" \
        --seed-file="$RUN_DIR/munge/munged.seed" </dev/null >>"$RUN_DIR/log/munged.out" 2>&1 ||
        die "munged did not start: see $RUN_DIR/munge/munged.log"
    wait_for 10 munge bash -c "munge -n --socket='$MUNGE_SOCKET' | unmunge --socket='$MUNGE_SOCKET'" ||
        die "munge does not answer on $MUNGE_SOCKET: see $RUN_DIR/munge/munged.log"
}

start_mariadb() {
    local cnf="$RUN_DIR/etc/mariadb.cnf"
    render mariadb.cnf "$cnf"
    mariadb-install-db --defaults-file="$cnf" --auth-root-authentication-method=socket --skip-test-db \
        >"$RUN_DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed: see $RUN_DIR/log/mariadb-install.log"
    setsid mariadbd --defaults-file="$cnf" </dev/null >>"$RUN_DIR/log/mariadb.out" 2>&1 &
    wait_for 60 mariadb mariadb-admin --defaults-file="$cnf" -uroot ping ||
        die "MariaDB did not start: see $RUN_DIR/log/mariadb.log"
    mariadb --defaults-file="$cnf" -uroot <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
}

start_slurm_daemons() {
    slurmdbd </dev/null >>"$RUN_DIR/log/slurmdbd.out" 2>&1 || die "slurmdbd did not start: see $RUN_DIR/log/slurmdbd.log"
    wait_for 60 slurmdbd sacctmgr -n list cluster || die "slurmdbd does not answer: see $RUN_DIR/log/slurmdbd.log"
    # Register before slurmctld starts so it finds its cluster, account and users at once.
    sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null
    sacctmgr -i -Q add account "$ACCOUNT" Cluster="$CLUSTER" Description="lge-synthbench test jobs" \
        Organization=lge >/dev/null
    local users extra=()
    read -ra extra <<<"${LGE_SLURM_USERS:-}"
    users=$(printf '%s\n' root "${SUDO_USER:-}" "${extra[@]}" | sort -u | grep . | paste -sd, -)
    sacctmgr -i -Q add user "$users" Account="$ACCOUNT" DefaultAccount="$ACCOUNT" Cluster="$CLUSTER" >/dev/null
    slurmctld </dev/null >>"$RUN_DIR/log/slurmctld.out" 2>&1 || die "slurmctld did not start: see $RUN_DIR/log/slurmctld.log"
    slurmd -N "$NODE" </dev/null >>"$RUN_DIR/log/slurmd.out" 2>&1 || die "slurmd did not start: see $RUN_DIR/log/slurmd.log"
    wait_for 60 node bash -c "sinfo -h -n '$NODE' -o %T | grep -qx idle" ||
        die "node $NODE is not idle (state: $(node_state)): see $RUN_DIR/log/slurmctld.log and slurmd.log"
}

write_env() {
    cat >"$RUN_DIR/env.sh.tmp" <<EOF
export SLURM_CONF=$SLURM_CONF
export LGE_SLURM_DIR=$RUN_DIR
export LGE_SLURM_PARTITION=$PARTITION
export LGE_SLURM_ACCOUNT=$ACCOUNT
export LGE_SLURM_GPUS=$GPUS
EOF
    chmod 644 "$RUN_DIR/env.sh.tmp"
    mv "$RUN_DIR/env.sh.tmp" "$RUN_DIR/env.sh"
}

main() {
    require_root
    local prog
    for prog in slurmctld slurmd slurmdbd munged mariadbd; do
        command -v "$prog" >/dev/null || die "$prog is missing: run 'sudo bash slurm/install.sh' first"
    done
    detect_node
    if is_healthy; then
        print_env
        return 0
    fi
    if [[ -e "$RUN_DIR" ]]; then bash "$HERE/stop.sh"; fi
    check_hostname
    check_ports
    make_dirs
    DB_PASS=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    render slurm.conf "$RUN_DIR/etc/slurm.conf"
    render slurmdbd.conf "$RUN_DIR/etc/slurmdbd.conf"
    chmod 600 "$RUN_DIR/etc/slurmdbd.conf"
    render cgroup.conf "$RUN_DIR/etc/cgroup.conf"
    render gres.conf "$RUN_DIR/etc/gres.conf"
    cp "$HERE/templates/plugstack.conf" "$RUN_DIR/etc/plugstack.conf"
    make_fake_gpus
    start_munge
    start_mariadb
    start_slurm_daemons
    check_listeners
    fingerprint >"$RUN_DIR/fingerprint"
    write_env
    print_env
}

main "$@"
