#!/usr/bin/env bash
# Open the MLflow UI on a study's local store, bound to 127.0.0.1 (pass HOST/PORT to change).
# Usage: launchers/mlflow_ui.sh runs/default [PORT]
# mlflow comes from the environment the suite is installed in: MLFLOW=/path/to/mlflow if set, else
# `python -m mlflow` with PYTHON if set, else the first of the active virtual env's python, this checkout's
# .venv/bin/python, python3 and python that imports both the suite (benchmark) and mlflow (checked with -I, so
# the current folder does not count as an installed suite).
set -euo pipefail
STUDY="${1:-runs/default}"
PORT="${2:-5000}"
HOST="${HOST:-127.0.0.1}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
[ -d "$STUDY" ] || { echo "error: $STUDY: study folder not found" >&2; exit 2; }
DB="$(cd "$STUDY" && pwd)/mlflow.db"
[ -f "$DB" ] || { echo "error: $DB not found (run the sweep first)" >&2; exit 2; }
HAS_BOTH="import importlib.util as u, sys; sys.exit(not (u.find_spec('benchmark') and u.find_spec('mlflow')))"

suite_python() {
  if [ -n "${PYTHON:-}" ]; then  # the user's explicit choice: used as given, or refused
    "$PYTHON" -I -c "$HAS_BOTH" 2>/dev/null && { echo "$PYTHON"; return; }
    echo "error: PYTHON=$PYTHON cannot import benchmark and mlflow (pip install -e . in that environment)" >&2
    return 1
  fi
  local py
  for py in ${VIRTUAL_ENV:+"$VIRTUAL_ENV/bin/python"} "$HERE/.venv/bin/python" python3 python; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -I -c "$HAS_BOTH" 2>/dev/null; then
      echo "$py"
      return
    fi
  done
  echo "error: no python here imports benchmark and mlflow (tried \$VIRTUAL_ENV, $HERE/.venv, python3, python);" \
    "set PYTHON=/path/to/python or MLFLOW=/path/to/mlflow" >&2
  return 1
}

if [ -n "${MLFLOW:-}" ]; then
  RUN=("$MLFLOW")
else
  PY="$(suite_python)" || exit 2
  RUN=("$PY" -m mlflow)
fi
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
exec "${RUN[@]}" server --backend-store-uri "sqlite:///$DB" --host "$HOST" --port "$PORT" --workers 2
