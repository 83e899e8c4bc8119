#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (MLflow comparison UI, HTML report rendering); needs root or sudo.
# Idempotent and quiet: does nothing when /usr/bin/chromium is there; apt's output is shown only on failure.
# Usage: bash scripts/install_chromium.sh
set -euo pipefail
# DPkg::Lock::Timeout below: wait for another apt run (a parallel job, unattended upgrades) instead of failing.
[ -x /usr/bin/chromium ] && exit 0
APT=(env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0)
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "error: chromium is missing and installing it needs root (no sudo)" >&2; exit 2; }
    APT=(sudo "${APT[@]}")
fi
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
if ! { "${APT[@]}" update && "${APT[@]}" install -y --no-install-recommends chromium; } >"$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    echo "error: apt-get could not install chromium (output above)" >&2
    exit 2
fi
[ -x /usr/bin/chromium ] || { echo "error: apt-get finished but /usr/bin/chromium is missing" >&2; exit 2; }
echo "installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
