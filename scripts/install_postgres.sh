#!/usr/bin/env bash
# Install Debian's PostgreSQL server for the production-backend tracking test (tests/reliability); needs root or sudo.
# Idempotent and quiet: does nothing when initdb and pg_ctl are there; apt's output is shown only on failure.
# Only the binaries are needed: Debian's own cluster (postgresql@*-main) is stopped again, since the tests start
# a private cluster on 127.0.0.1 in a temp folder.
# Usage: bash scripts/install_postgres.sh
set -euo pipefail
have() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; }
have && exit 0
APT=(env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0)
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "error: postgresql is missing and installing it needs root (no sudo)" >&2; exit 2; }
    SUDO=(sudo)
fi
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
if ! { "${SUDO[@]}" "${APT[@]}" update && "${SUDO[@]}" "${APT[@]}" install -y --no-install-recommends \
        postgresql postgresql-client; } >"$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    echo "error: apt-get could not install postgresql (output above)" >&2
    exit 2
fi
have || { echo "error: apt-get finished but /usr/lib/postgresql/*/bin/initdb is missing" >&2; exit 2; }
# the package may have started its default cluster on port 5432; the tests do not use it
if command -v pg_ctlcluster >/dev/null; then
    for conf in /etc/postgresql/*/main; do
        [ -d "$conf" ] || continue
        version="$(basename "$(dirname "$conf")")"
        "${SUDO[@]}" pg_ctlcluster "$version" main stop >/dev/null 2>&1 || true
    done
fi
bins=(/usr/lib/postgresql/*/bin)
echo "installed ${bins[-1]}"
