"""Addresses of a study's pages in the MLflow UI (plain string building: no mlflow import).

MLflow 3 opens a fresh browser on its GenAI overview, where a study's runs do not show; these links go straight
to the experiment's runs table (``#/experiments/<id>/runs``) and to the comparison of chosen runs
(``#/compare-runs?runs=[...]&experiments=[...]``, JSON arrays URL-encoded as the UI writes them). Both routes are
those of MLflow 3.17's web app (its router's ``/experiments/:experimentId/runs`` and ``/compare-runs``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import quote

__all__ = ["LOCAL_UI", "RUN_NAME_KEY", "compare_url", "runs_table_url", "split_arm_runs", "ui_address"]

LOCAL_UI = "http://127.0.0.1:5000"  # where launchers/mlflow_ui.sh serves a study's local store by default
RUN_NAME_KEY = "tags.`mlflow.runName`"  # the runs table's sort key for the run name


def ui_address(uri: str, local_ui: str = LOCAL_UI) -> str:
    """The UI that shows a tracking store: the server itself for ``http(s)://``, else the local UI launcher's.

    Args:
        uri: tracking URI (``http://host:port``, ``sqlite:///...``, a PostgreSQL URI, ...).
        local_ui: address of the UI started on a file or database store (``launchers/mlflow_ui.sh``).

    Returns:
        The UI's base address, without a trailing slash.
    """
    return (uri if uri.startswith(("http://", "https://")) else local_ui).rstrip("/")


def runs_table_url(ui: str, experiment_id: str) -> str:
    """Address of an experiment's runs table, sorted by run name.

    Sorted by start time (the UI's default) the job runs are nested, collapsed, under the sweep's parent run;
    sorted by run name every job shows on its own row, grouped by kind (``gen/``, ``quality/``, ``seg/``).

    Args:
        ui: the UI's base address (see :func:`ui_address`).
        experiment_id: the study's experiment id.

    Returns:
        ``<ui>/#/experiments/<id>/runs?orderByKey=tags.`mlflow.runName`&orderByAsc=true`` (URL-encoded).
    """
    exp, order = quote(str(experiment_id), safe=""), quote(RUN_NAME_KEY, safe="")
    return f"{ui.rstrip('/')}/#/experiments/{exp}/runs?orderByKey={order}&orderByAsc=true"


def compare_url(ui: str, experiment_id: str, run_ids: Sequence[str]) -> str | None:
    """Address of the run-comparison page for ``run_ids`` (None unless ``ui`` is an HTTP address).

    Args:
        ui: the UI's base address (an ``http(s)://`` tracking URI is its own UI).
        experiment_id: the experiment the runs belong to.
        run_ids: the runs, in the column order wanted.

    Returns:
        ``<ui>/#/compare-runs?runs=<["id",...]>&experiments=<["id"]>`` with both JSON arrays URL-encoded
        (compact, as the UI's own ``JSON.stringify`` writes them).
    """
    if not ui.startswith(("http://", "https://")):
        return None
    compact = {"separators": (",", ":")}
    runs, exps = json.dumps([str(r) for r in run_ids], **compact), json.dumps([str(experiment_id)], **compact)
    return f"{ui.rstrip('/')}/#/compare-runs?runs={quote(runs)}&experiments={quote(exps)}"


def split_arm_runs(runs: Sequence) -> tuple[str, list[str]]:
    """The segmentation runs of the study's first split and seed, one per arm (the newest finished run of each).

    Args:
        runs: :class:`benchmark.tracking.runs.RunRecord` of the experiment, oldest first.

    Returns:
        ``(label, run ids)``: e.g. ``("split 0, seed 0", [...])``, the baseline ``real`` first, then by arm name;
        empty when no segmentation run finished.
    """
    seg = [r for r in runs if r.tags.get("kind") == "segmentation" and r.status == "FINISHED" and "arm" in r.tags]
    if not seg:
        return "", []
    key = min((_int(r.tags.get("split")), _int(r.tags.get("seed"))) for r in seg)
    newest = {}
    for r in seg:  # oldest first: a re-run of the same arm replaces the earlier one
        if (_int(r.tags.get("split")), _int(r.tags.get("seed"))) == key:
            newest[r.tags["arm"]] = r
    arms = sorted(newest, key=lambda a: (a != "real", a))
    return f"split {key[0]}, seed {key[1]}", [newest[a].run_id for a in arms]


def _int(value: str | None) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 1 << 30
