"""Reading a study back from MLflow (the analysis side), as plain Python values: callers never touch mlflow
objects, and mlflow is imported by ``benchmark.tracking`` only (``client_for``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.errors import TrackingError
from benchmark.tracking.links import LOCAL_UI, compare_url, runs_table_url, split_arm_runs, ui_address
from benchmark.tracking.tracker import MLFLOW_PARENT_TAG, client_for

__all__ = ["RunRecord", "compare_url", "download_artifact", "experiment_runs", "find_run", "run_artifacts",
           "study_ui_lines"]  # fmt: skip


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run as plain values.

    Args:
        run_id: MLflow run id.
        name: run name (``seg/split2/seed0/real+spade_ldm``, ``sweep/<study>``, ...).
        status: ``FINISHED``, ``FAILED``, ``RUNNING``, ``KILLED`` or ``SCHEDULED``.
        start_time: milliseconds since the epoch (orders re-runs of the same job).
        tags: user tags (MLflow's own ``mlflow.*`` tags left out, except the parent id in ``parent_id``).
        params: logged parameters.
        metrics: latest value of every metric.
        parent_id: the sweep's parent run, if any.
    """

    run_id: str
    name: str
    status: str
    start_time: int
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    parent_id: str | None = None


def experiment_runs(uri: str, name: str) -> tuple[str, list[RunRecord]]:
    """Every active run of the experiment ``name``, oldest first.

    Args:
        uri: tracking URI.
        name: experiment name (the study name unless ``tracking.experiment`` was set).

    Returns:
        The experiment id and its runs.

    Raises:
        TrackingError: when the store cannot be read or holds no such experiment (the known names are listed).
    """
    try:
        client = client_for(uri)
        exp = client.get_experiment_by_name(name)
        if exp is None:
            known = sorted(e.name for e in client.search_experiments(max_results=200))
            have = ", ".join(known) or "none"
            raise TrackingError(f"tracking store {uri} has no experiment {name!r}; it has: {have}")
        runs, token = [], None
        while True:
            page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token,
                                      order_by=["attributes.start_time ASC"])  # fmt: skip
            runs.extend(page)
            token = page.token
            if not token:
                break
    except TrackingError:
        raise
    except Exception as exc:  # MlflowException, requests errors, sqlite errors
        raise TrackingError(f"cannot read experiment {name!r} from {uri}: {exc}") from None
    return exp.experiment_id, [_record(r) for r in runs]


def _record(run: Any) -> RunRecord:
    tags = dict(run.data.tags)
    return RunRecord(
        run_id=run.info.run_id,
        name=run.info.run_name or tags.get("mlflow.runName", ""),
        status=run.info.status,
        start_time=int(run.info.start_time or 0),
        tags={k: v for k, v in tags.items() if not k.startswith("mlflow.")},
        params=dict(run.data.params),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        parent_id=tags.get(MLFLOW_PARENT_TAG),
    )


def run_artifacts(uri: str, run_id: str, folder: str | None = None) -> list[str]:
    """Paths of the files logged at the top level of a run's artifacts (or of its artifact folder ``folder``)."""
    try:
        return sorted(a.path for a in client_for(uri).list_artifacts(run_id, folder) if not a.is_dir)
    except Exception as exc:
        raise TrackingError(f"cannot list the artifacts of run {run_id} at {uri}: {exc}") from None


def find_run(uri: str, ref: str) -> RunRecord:
    """The run whose id is ``ref``, else the newest FINISHED run named ``ref`` in any experiment of the store.

    Args:
        uri: tracking URI.
        ref: a run id or a run name (``gen/pool/spade_ldm/seed0``).

    Raises:
        TrackingError: when the store cannot be read, no run matches, or the name is in several experiments.
    """
    try:
        client = client_for(uri)
        try:
            return _record(client.get_run(ref))
        except Exception:  # not a run id (an unreadable store fails below, with its own message)
            pass
        exps = [e.experiment_id for e in client.search_experiments(max_results=1000)]
        name = ref.replace("'", "\\'")
        found = client.search_runs(exps, filter_string=f"attributes.run_name = '{name}' and attributes.status = "
                                   "'FINISHED'", order_by=["attributes.start_time DESC"]) if exps else []  # fmt: skip
    except Exception as exc:  # MlflowException, requests errors, sqlite errors
        raise TrackingError(f"cannot look up run {ref!r} at {uri}: {exc}") from None
    if not found:
        raise TrackingError(f"--run {ref}: no run with that id, and no FINISHED run with that name, at {uri}")
    if len({r.info.experiment_id for r in found}) > 1:
        raise TrackingError(f"--run {ref}: that name is in several experiments at {uri}; pass the run id instead")
    return _record(found[0])


def download_artifact(uri: str, run_id: str, path: str, dst_dir: str | Path) -> Path:
    """Copy one artifact of a run into ``dst_dir`` and return its local path."""
    import os

    # A progress bar per small file drowns the analysis output; users can still turn it back on.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    Path(dst_dir).mkdir(parents=True, exist_ok=True)
    try:
        return Path(client_for(uri).download_artifacts(run_id, path, str(dst_dir)))
    except Exception as exc:
        raise TrackingError(f"cannot download artifact {path!r} of run {run_id} from {uri}: {exc}") from None


def study_ui_lines(uri: str, experiment: str, local_ui: str = LOCAL_UI) -> list[str]:
    """The lines a sweep prints last: the study's runs table and the comparison of one split's arms.

    Args:
        uri: tracking URI of the study.
        experiment: the study's experiment name.
        local_ui: the UI's address for a non-HTTP store.

    Returns:
        One or two lines; one line saying why when the store cannot be read.
    """
    try:
        exp_id, runs = experiment_runs(uri, experiment)
    except TrackingError as exc:
        return [f"MLflow UI links not available: {exc}"]
    ui = ui_address(uri, local_ui)
    lines = [f"MLflow runs table: {runs_table_url(ui, exp_id)}"]
    label, ids = split_arm_runs(runs)
    if ids:
        lines.append(f"MLflow compare arms ({label}): {compare_url(ui, exp_id, ids)}")
    return lines
