#!/usr/bin/env bash
# Install the Debian packages of the single-node test cluster (Slurm 22.05, munge, slurmdbd, MariaDB).
# Idempotent: returns at once when everything is installed. Run as root (or through sudo).
# Services are never started here (policy-rc.d denies it): slurm/start.sh starts them by hand.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client slurmdbd slurm-wlm-mysql-plugin munge mariadb-server mariadb-client iproute2)

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "slurm/install.sh: all packages present"
    exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "slurm/install.sh: run as root (missing: ${missing[*]})" >&2; exit 1; }
    SUDO=(sudo -E)
fi

# Package maintainer scripts would start the daemons with the stock configuration (mariadb on its default
# socket, munged with the system key); keep them down while installing if no policy exists yet.
POLICY=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e "$POLICY" ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    made_policy=1
fi
cleanup() { [[ $made_policy -eq 1 ]] && "${SUDO[@]}" rm -f "$POLICY"; return 0; }
trap cleanup EXIT

log=$(mktemp /tmp/lge-slurm-install.XXXXXX.log)
echo "slurm/install.sh: installing ${missing[*]} (log: $log)"
export DEBIAN_FRONTEND=noninteractive
if ! { "${SUDO[@]}" apt-get update -qq && "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${PACKAGES[@]}"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "slurm/install.sh: apt-get failed (full log: $log)" >&2
    exit 1
fi
rm -f "$log"
echo "slurm/install.sh: installed $(dpkg-query -W -f='${Version}' slurmctld) slurm, $(dpkg-query -W -f='${Version}' munge) munge"
