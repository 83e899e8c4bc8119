"""Read a study back from MLflow into the same tidy frames as :func:`benchmark.analysis.collect.collect_study`.

A sweep logs one experiment per study: a parent run ``sweep/<study>`` (with ``splits.json``) and a child run per
job, tagged with ``kind``, ``job_key``, ``split``, ``seed``, ``arm`` and ``generator``. Segmentation runs carry
``per_case.csv`` and ``arm.json``; image-quality runs ``per_case.csv`` and ``summary.json``. The frames come
from those artifacts, never from the logged means, so paired tests see every case; the rows are read by
``benchmark.results`` exactly as from a study folder (they carry their study, split, seed, generator and arm;
nothing is taken from tags).

Re-running a sweep after a config change adds new runs under the same job key, and on a shared server another
variant of the study (same name, another config) or another user adds runs to the same experiment. Every job run is
tagged with its ``config_hash`` (the hash the study folder's ``state/jobs.json`` records for its key): given those
hashes (``config_hashes``, e.g. from :func:`study_config_hashes`) only runs of the study's own config are read, so
variants never mix; the others are counted in ``notes``. Of the runs kept, the newest FINISHED run of each key is
used and the older ones are listed in ``notes``. Runs that did not finish are listed too.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark import results
from benchmark.analysis.collect import StudyFrames
from benchmark.analysis.tables import quality_notes
from benchmark.errors import DataError, TrackingError
from benchmark.tracking.runs import RunRecord, download_artifact, experiment_runs, run_artifacts

__all__ = ["MlflowStudy", "check_store", "read_study", "read_study_frames", "select_runs", "kind_of",
           "study_config_hashes"]  # fmt: skip

_PREFIX_KIND = {"seg": "segmentation", "quality": "quality", "gen": "generator", "sweep": "sweep"}
# Artifacts a finished run of each kind must carry for its rows to be read.
REQUIRED = {"segmentation": (results.ROWS_FILE,), "quality": (results.ROWS_FILE, results.SUMMARY_FILE)}
_LIST_AT_MOST = 20


@dataclass
class MlflowStudy:
    """A study read from MLflow.

    Args:
        uri: tracking URI.
        experiment: experiment name.
        experiment_id: its id.
        frames: the tidy frames (see :class:`~benchmark.analysis.collect.StudyFrames`).
        runs: the job runs the frames came from, by job key.
        missing: finished runs without their per-case artifacts (left out of ``frames``).
        notes: what a reader of the tables should know (unfinished runs, superseded runs, fallbacks used).
        expected_arms: every arm with a segmentation run of any status (so failed arms still get a table row).
    """

    uri: str
    experiment: str
    experiment_id: str
    frames: StudyFrames
    runs: dict[str, RunRecord] = field(default_factory=dict)
    missing: list[tuple[RunRecord, list[str]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    expected_arms: list[str] = field(default_factory=list)


def kind_of(run: RunRecord) -> str:
    """The run's job kind from its ``kind`` tag, or from its name's prefix (``seg/``, ``quality/``, ...)."""
    if run.tags.get("kind"):
        return run.tags["kind"]
    return _PREFIX_KIND.get(run.name.split("/", 1)[0], "unknown")


def _describe(run: RunRecord) -> str:
    return f"{run.name or '(unnamed)'} (run {run.run_id}, {run.status})"


def _listing(items: list[str]) -> str:
    more = len(items) - _LIST_AT_MOST
    return "; ".join(items[:_LIST_AT_MOST]) + (f"; and {more} more" if more > 0 else "")


def study_config_hashes(study_dir: str | Path) -> dict[str, str]:
    """Job key -> config hash, as the study folder's driver recorded them (``<study>/state/jobs.json``).

    Raises:
        DataError: when the folder holds no job records (never run from there) or an unreadable state file.
    """
    from benchmark.run.state import StudyState

    state = StudyState(study_dir)
    records = state.load()
    if not records:
        raise DataError(state.path, "not found or empty: the study folder's job records give each job's config hash")
    return {key: rec.cfg_hash for key, rec in records.items()}


def _of_config(runs: list[RunRecord], config_hashes: Mapping[str, str] | None) -> tuple[list[RunRecord], list]:
    """The runs of the study's own config (parents: those whose children are kept) and the others."""
    if config_hashes is None:
        return runs, []
    mine, other = [], []
    for run in runs:
        key = run.tags.get("job_key") or run.name
        own = kind_of(run) == "sweep" or config_hashes.get(key) == run.tags.get("config_hash")
        (mine if own else other).append(run)
    parent_ids = {r.parent_id for r in mine if kind_of(r) != "sweep"}
    return [r for r in mine if kind_of(r) != "sweep" or r.run_id in parent_ids], other


def select_runs(
    runs: list[RunRecord], config_hashes: Mapping[str, str] | None = None
) -> tuple[dict[str, RunRecord], list[RunRecord], list[str]]:
    """Pick the runs an analysis uses.

    Args:
        runs: every run of the experiment.
        config_hashes: job key -> the config hash of the study's own jobs; runs of another hash (another variant
            or user of the experiment, an older config) are left out. None: every run (a note says when some
            job key carries several hashes).

    Returns:
        The newest FINISHED job run per job key (``job_key`` tag, else the run name), the parent runs (newest
        first) and notes on runs that were left out (another config, unfinished, or superseded by a newer
        finished run).
    """
    jobs: dict[str, RunRecord] = {}
    parents, unfinished, superseded = [], [], []
    runs, other = _of_config(runs, config_hashes)
    for run in sorted(runs, key=lambda r: r.start_time):
        kind = kind_of(run)
        if kind == "sweep":
            parents.append(run)
        elif run.status != "FINISHED":
            unfinished.append(run)
        else:
            key = run.tags.get("job_key") or run.name
            if key in jobs:
                superseded.append(jobs[key])
            jobs[key] = run
    notes = []
    if other:
        notes.append(f"{len(other)} job run(s) of another config (another variant or user of this experiment) left "
                     "out: " + _listing([_describe(r) for r in other]))  # fmt: skip
    mixed = _mixed_hashes([*jobs.values(), *superseded]) if config_hashes is None else []
    if mixed:
        notes.append(f"{len(mixed)} job(s) have finished runs of several config hashes (variants or users mixing?); "
                     "pass the study folder to read only its config's runs: " + _listing(mixed))  # fmt: skip
    still_missing = [r for r in unfinished if (r.tags.get("job_key") or r.name) not in jobs]
    if still_missing:
        notes.append(f"{len(still_missing)} job run(s) did not finish and have no finished re-run: "
                     + _listing([_describe(r) for r in still_missing]))  # fmt: skip
    if superseded:
        notes.append(f"{len(superseded)} older finished run(s) superseded by a newer run of the same job: "
                     + _listing([_describe(r) for r in superseded]))  # fmt: skip
    return jobs, parents[::-1], notes


def _mixed_hashes(finished: list[RunRecord]) -> list[str]:
    seen: dict[str, set[str]] = {}
    for run in finished:
        seen.setdefault(run.tags.get("job_key") or run.name, set()).add(run.tags.get("config_hash", ""))
    return sorted(k for k, hashes in seen.items() if len(hashes) > 1)


def _int_or_str(value: Any) -> Any:
    text = str(value)
    return int(text) if text.lstrip("-").isdigit() else text


def _read_artifact(uri: str, run: RunRecord, name: str, tmp: Path) -> Path:
    return download_artifact(uri, run.run_id, name, tmp / run.run_id)


def _artifact_rows(read: Any, uri: str, run: RunRecord, name: str, tmp: Path) -> pd.DataFrame:
    """A ``benchmark.results`` reader on one artifact of the run; a problem with the file names the run."""
    try:
        return read([_read_artifact(uri, run, name, tmp)])
    except DataError as exc:
        raise DataError(f"{name} of {_describe(run)}", exc.problem) from None


def _arm_record(uri: str, run: RunRecord, artifacts: list[str], tmp: Path) -> dict[str, Any]:
    if "arm.json" in artifacts:
        return json.loads(_read_artifact(uri, run, "arm.json", tmp).read_text())
    m = run.metrics
    return {"arm": run.tags.get("arm", ""), "split": _int_or_str(run.tags.get("split", "")),
            "train_seed": _int_or_str(run.tags.get("seed", "")),
            **{k: m.get(k) for k in ("n_real", "n_synthetic", "n_augmented")}}  # fmt: skip


def _split_sizes(uri: str, parents: list[RunRecord], seg: pd.DataFrame, arms: pd.DataFrame, tmp: Path, notes: list):
    """Train/test cases per split: from the parent run's ``splits.json``, else from the runs themselves."""
    for parent in parents:
        if "splits.json" in run_artifacts(uri, parent.run_id):
            plan = json.loads(_read_artifact(uri, parent, "splits.json", tmp).read_text())
            return pd.DataFrame([
                {"split": int(s["index"]), "n_train": len(s["train_cases"]), "n_test": len(s["test_cases"])}
                for s in plan["splits"]
            ])  # fmt: skip
    if seg.empty:
        return pd.DataFrame(columns=["split", "n_train", "n_test"])
    # Without splits.json: test cases are the cases evaluated, training cases the real arm's real volumes.
    real = arms[arms["arm"] == "real"] if "arm" in arms.columns else pd.DataFrame()
    n_train = real.groupby("split")["n_real"].first().to_dict() if "n_real" in real.columns else {}
    rows = [{"split": split, "n_train": n_train.get(split, float("nan")), "n_test": grp["case_id"].nunique()}
            for split, grp in seg.groupby("split")]  # fmt: skip
    notes.append("no parent run with splits.json: split sizes taken from the evaluated cases (n_test) and the "
                 "'real' arm's training volumes (n_train)")  # fmt: skip
    return pd.DataFrame(rows)


def _check_artifacts(uri: str, used: dict[str, RunRecord], where: str, allow_missing: bool, notes: list[str]):
    """Each used run's top-level artifacts, and the runs lacking a required one (an error unless allowed)."""
    missing, listed = [], {}
    for key, run in used.items():
        listed[key] = run_artifacts(uri, run.run_id)
        absent = [a for a in REQUIRED[kind_of(run)] if a not in listed[key]]
        if absent:
            missing.append((run, absent))
    if missing:
        text = _listing([f"{_describe(r)} lacks {', '.join(a)}" for r, a in missing])
        if not allow_missing:
            raise DataError(where, f"{len(missing)} finished run(s) lack their per-case artifacts: {text}")
        notes.append(f"left out, per-case artifacts missing: {text}")
    return listed, missing


def read_study(
    uri: str, experiment: str, *, allow_missing: bool = False, config_hashes: Mapping[str, str] | None = None
) -> MlflowStudy:
    """Read a study's per-case rows, image-quality rows, split sizes and arm records from MLflow.

    Args:
        uri: tracking URI (``sqlite:///.../mlflow.db`` or ``http://127.0.0.1:5000``).
        experiment: the experiment name (the study name unless ``tracking.experiment`` was set).
        allow_missing: keep going when finished runs lack their per-case artifacts (they are listed in
            ``missing`` and ``notes``); by default that is an error.
        config_hashes: job key -> config hash of the study's own jobs (:func:`study_config_hashes`): only those
            runs are read. None: every run of the experiment (the newest finished run per job key).

    Returns:
        The study with its frames, the runs used and notes.

    Raises:
        TrackingError: when the store or experiment cannot be read.
        DataError: when the experiment holds no runs, no finished segmentation or quality runs, or (unless
            ``allow_missing``) finished runs without their per-case artifacts; every such run is named.
    """
    where = f"experiment {experiment!r} at {uri}"
    check_store(uri)
    exp_id, runs = experiment_runs(uri, experiment)
    if not runs:
        raise DataError(where, "holds no runs (was the sweep run with tracking enabled and this store?)")
    jobs, parents, notes = select_runs(runs, config_hashes)
    used = {k: r for k, r in sorted(jobs.items()) if kind_of(r) in REQUIRED}
    if not used:
        of = " of the study's config hashes" if config_hashes is not None else ""
        raise DataError(where, f"holds no finished segmentation or image-quality runs{of}; its runs: "
                        + _listing([_describe(r) for r in runs]))  # fmt: skip
    listed, missing = _check_artifacts(uri, used, where, allow_missing, notes)
    skip = {r.run_id for r, _ in missing}
    runs_read = {k: r for k, r in used.items() if r.run_id not in skip}
    with tempfile.TemporaryDirectory(prefix="lge-mlflow-") as tmpdir:
        frames = _read_frames(uri, runs_read, listed, parents, Path(tmpdir), notes)
    notes += quality_notes(frames.quality)
    own, _ = _of_config(runs, config_hashes)
    expected = [r.tags.get("arm") or r.name.rsplit("/", 1)[-1] for r in own if kind_of(r) == "segmentation"]
    return MlflowStudy(uri=uri, experiment=experiment, experiment_id=exp_id, frames=frames, runs=used,
                       missing=missing, notes=notes, expected_arms=list(dict.fromkeys(expected)))  # fmt: skip


def _read_frames(
    uri: str, runs: dict[str, RunRecord], listed: dict[str, list[str]], parents: list[RunRecord], tmp: Path, notes: list
) -> StudyFrames:
    """The runs' rows, concatenated as they are, their arm records and the split sizes."""
    seg_keys = [k for k, r in runs.items() if kind_of(r) == "segmentation"]
    q_keys = [k for k, r in runs.items() if kind_of(r) == "quality"]
    per_case = {k: _artifact_rows(results.read_per_case, uri, r, results.ROWS_FILE, tmp) for k, r in runs.items()}
    seg = results.concat(per_case[k] for k in seg_keys)
    sets = [_artifact_rows(results.read_summaries, uri, runs[k], results.SUMMARY_FILE, tmp) for k in q_keys]
    quality = results.concat([*(per_case[k] for k in q_keys), *sets], results.SET_COLUMNS)
    arms = pd.DataFrame([_arm_record(uri, runs[k], listed[k], tmp) for k in seg_keys])
    sizes = _split_sizes(uri, parents, seg, arms, tmp, notes)
    return StudyFrames(seg=seg, quality=quality, split_sizes=sizes, arms=arms)


def read_study_frames(
    uri: str, experiment: str, *, allow_missing: bool = False, config_hashes: Mapping[str, str] | None = None
) -> StudyFrames:
    """The frames of :func:`read_study` only (same shape as ``collect_study`` gives for a study folder)."""
    return read_study(uri, experiment, allow_missing=allow_missing, config_hashes=config_hashes).frames


def check_store(uri: str) -> None:
    """Fail early when a sqlite store file does not exist (opening it would create an empty one).

    Raises:
        TrackingError: naming the missing file.
    """
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))  # "sqlite:////abs" keeps its leading slash
        if not path.is_file():
            raise TrackingError(f"{path}: no MLflow store here (pass --tracking-uri, or run the sweep first)")
