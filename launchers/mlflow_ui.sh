#!/usr/bin/env bash
# Open the MLflow UI on a study's local store, bound to 127.0.0.1 (pass HOST/PORT to change).
# Usage: launchers/mlflow_ui.sh runs/default [PORT]
set -euo pipefail
STUDY="${1:-runs/default}"
PORT="${2:-5000}"
HOST="${HOST:-127.0.0.1}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
MLFLOW="${MLFLOW:-$HERE/.venv/bin/mlflow}"
DB="$(cd "$STUDY" && pwd)/mlflow.db"
[ -f "$DB" ] || { echo "error: $DB not found (run the sweep first)" >&2; exit 2; }
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
exec "$MLFLOW" server --backend-store-uri "sqlite:///$DB" --host "$HOST" --port "$PORT" --workers 2
