#!/usr/bin/env bash
# Stop the test cluster started by slurm/start.sh: cancel its jobs, then end slurmd and slurmctld, slurmdbd,
# MariaDB and munged (in that order), each by the pid in its pid file. Leftover job step daemons and job
# processes of this cluster (those whose environment holds our SLURM_CONF) are ended too.
# Add --purge to remove the runtime folder. Safe to run when nothing is running.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=slurm/common.sh
source "$HERE/common.sh"

# stop_pids PIDFILE:NAME...: SIGTERM to all of them at once, wait up to 15 s, then SIGKILL what is left.
stop_pids() {
    local spec pid pids=() names=()
    for spec in "$@"; do
        pid=$(live_pid "${spec%%:*}" "${spec##*:}") || continue
        kill -TERM "$pid" 2>/dev/null || continue
        pids+=("$pid")
        names+=("${spec##*:}")
    done
    local deadline=$((SECONDS + 15)) i
    for i in "${!pids[@]}"; do
        while [[ -e "/proc/${pids[i]}" ]] && ((SECONDS < deadline)); do sleep 0.1; done
        if [[ -e "/proc/${pids[i]}" ]]; then
            log "${names[i]} (${pids[i]}) ignored SIGTERM, killing it"
            kill -KILL "${pids[i]}" 2>/dev/null || true
        fi
        log "stopped ${names[i]} (${pids[i]})"
    done
}

cancel_jobs() {
    live_pid "$RUN_DIR/pid/slurmctld.pid" slurmctld >/dev/null || return 0
    local jobs
    mapfile -t jobs < <(squeue -h -o %A 2>/dev/null) || return 0
    [[ ${#jobs[@]} -gt 0 ]] || return 0
    log "cancelling jobs ${jobs[*]}"
    scancel "${jobs[@]}" || true
    # shellcheck disable=SC2016 # expanded by the inner shell, on every try
    wait_for 20 "jobs to end" bash -c '[[ -z "$(squeue -h -o %A)" ]]' || log "some jobs did not end in 20 s"
}

# Job step daemons and job processes outlive slurmd (and a killed slurmstepd leaves its job behind); find
# this cluster's through the SLURM_CONF they inherited, job processes also by their SLURM_JOB_ID.
kill_leftovers() {
    local file pid comm
    # One grep over every environment (NUL-separated lines) instead of a process per pid.
    while read -r file; do
        pid=${file#/proc/}
        pid=${pid%/environ}
        [[ "$pid" != "$$" ]] || continue
        comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
        if [[ "$comm" == slurmstepd ]] || grep -qszE '^SLURM_JOB_ID=' "$file"; then
            log "killing leftover $comm ($pid)"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done < <(grep -lsxzF "SLURM_CONF=$SLURM_CONF" /proc/[0-9]*/environ)
}

main() {
    require_root
    if [[ ! -d "$RUN_DIR" ]]; then
        log "nothing to stop ($RUN_DIR does not exist)"
        return 0
    fi
    [[ -f "$MARKER" ]] || die "$RUN_DIR is not a test-cluster folder"
    cancel_jobs
    # slurmctld reports to slurmdbd while it shuts down, and both need munge to authenticate.
    stop_pids "$RUN_DIR/pid/slurmd.pid:slurmd" "$RUN_DIR/pid/slurmctld.pid:slurmctld"
    kill_leftovers
    stop_pids "$RUN_DIR/pid/slurmdbd.pid:slurmdbd"
    stop_pids "$RUN_DIR/pid/mariadb.pid:mariadbd" "$RUN_DIR/munge/munged.pid:munged"
    rm -f "$RUN_DIR/env.sh"
    if [[ "${1:-}" == --purge ]]; then
        rm -rf "$RUN_DIR"
        log "removed $RUN_DIR"
    fi
}

main "$@"
