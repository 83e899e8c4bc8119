"""Per-case result rows: one schema for segmentation and image-quality rows, one writer, one reader.

Every job with per-case numbers writes ``per_case.csv`` through :func:`write_per_case`, in the columns
:data:`COLUMNS`, so the files of any kind of job concatenate as they are: nothing is re-attached from folder
names or tracker tags (nnU-Net's rule: rows first, means derived). Segmentation rows leave ``backbone`` empty;
image-quality rows leave ``arm`` and ``reason`` empty.

Robustness rows (a segmenter on shifted test sets) carry two more columns, ``shift`` and ``severity``
(:data:`SHIFT_COLUMNS`), and go to their own file, ``robustness.csv`` (:func:`write_shifted`,
:func:`read_shifted`), so ``per_case.csv`` files keep one set of columns.

Set-level metrics (FID, KID, MMD with their confidence intervals) have no per-case value: they go to
``summary.json`` together with the job they belong to (:func:`write_summary`) and come back as rows with an
empty ``case_id`` (:func:`read_summaries`), in :data:`SET_COLUMNS`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from benchmark.atomic import write_text_atomic
from benchmark.errors import DataError

if TYPE_CHECKING:
    from benchmark.tracking.tracker import Tracker

COLUMNS = ("study", "split", "seed", "generator", "arm", "case_id", "metric", "value", "reason", "backbone")
JOB_KEYS = ("study", "split", "seed", "generator", "arm")  # what every row of one job shares
SET_COLUMNS = (*COLUMNS, "ci_low", "ci_high", "n", "note")
SHIFT_COLUMNS = (*COLUMNS, "shift", "severity")
ROWS_FILE = "per_case.csv"
SHIFT_FILE = "robustness.csv"
SUMMARY_FILE = "summary.json"


def conform(
    frame: pd.DataFrame, where: str | Path = "per-case rows", columns: tuple[str, ...] = COLUMNS
) -> pd.DataFrame:
    """The rows in exactly the columns of :data:`COLUMNS` (or ``columns``), in that order.

    Args:
        frame: per-case rows.
        where: named at the start of the error (a file, or what the rows are).
        columns: the expected columns (:data:`SHIFT_COLUMNS` for robustness rows).

    Returns:
        A new frame with the columns reordered.

    Raises:
        DataError: one line naming the missing (and any unexpected) columns.
    """
    missing = [c for c in columns if c not in frame.columns]
    extra = [str(c) for c in frame.columns if c not in columns]
    if missing or extra:
        problems = [f"missing columns {missing}"] if missing else []
        problems += [f"unexpected columns {extra}"] if extra else []
        raise DataError(where, f"{'; '.join(problems)} (per-case columns: {', '.join(columns)})")
    return frame.loc[:, list(columns)]


def write_per_case(
    frame: pd.DataFrame, out_dir: str | Path, tracker: Tracker | None = None, *, name: str = ROWS_FILE
) -> Path:
    """Write ``out_dir/per_case.csv`` atomically and log it as an artifact.

    Args:
        frame: the job's per-case rows (checked with :func:`conform`).
        out_dir: the job folder (created when absent).
        tracker: where the file is logged as an artifact (None: nowhere).
        name: the file name; :data:`SHIFT_FILE` takes rows in :data:`SHIFT_COLUMNS` (see :func:`write_shifted`).

    Returns:
        The path written.
    """
    path = Path(out_dir) / name
    rows = conform(frame, path, SHIFT_COLUMNS if name == SHIFT_FILE else COLUMNS)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, rows.to_csv(index=False))
    if tracker is not None:
        tracker.log_artifact(path)
    return path


def write_shifted(frame: pd.DataFrame, out_dir: str | Path, tracker: Tracker | None = None) -> Path:
    """Write a robustness job's rows (:data:`SHIFT_COLUMNS`) to ``out_dir/robustness.csv``, as :func:`write_per_case`.

    Args:
        frame: per-case rows with ``shift`` (the family) and ``severity`` (1..3; 1 for a site or external set).
        out_dir: the job folder.
        tracker: where the file is logged as an artifact (None: nowhere).

    Returns:
        The path written.
    """
    return write_per_case(frame, out_dir, tracker, name=SHIFT_FILE)


def read_per_case(paths: Iterable[str | Path], columns: tuple[str, ...] = COLUMNS) -> pd.DataFrame:
    """The rows of ``per_case.csv`` files, concatenated (segmentation and image-quality files alike).

    Args:
        paths: the files, in the order their rows should come.
        columns: the files' columns (:data:`SHIFT_COLUMNS` for ``robustness.csv``, see :func:`read_shifted`).

    Returns:
        One frame in ``columns`` (empty, with those columns, for no files).

    Raises:
        DataError: naming a file that cannot be parsed or lacks a column.
    """
    frames = []
    for path in paths:
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(path, f"cannot read as CSV: {exc}") from None
        frames.append(conform(frame, path, columns))
    return concat(frames, columns)


def read_shifted(paths: Iterable[str | Path]) -> pd.DataFrame:
    """The rows of ``robustness.csv`` files, concatenated, in :data:`SHIFT_COLUMNS`.

    Args:
        paths: the files.

    Returns:
        One frame (empty, with those columns, for no files).
    """
    return read_per_case(paths, SHIFT_COLUMNS)


def concat(frames: Iterable[pd.DataFrame], columns: Iterable[str] = COLUMNS) -> pd.DataFrame:
    """Rows of several frames, one after the other; empty frames are left out, since their text-typed columns
    would turn every column they share into text.

    Args:
        frames: frames of rows (per-case or set-level).
        columns: the columns of the empty frame returned when no frame has a row.

    Returns:
        The concatenated rows.
    """
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns))


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None  # strict JSON has no inf/NaN
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_summary(
    summary: Mapping[str, Mapping[str, Any]],
    out_dir: str | Path,
    job: Mapping[str, Any],
    tracker: Tracker | None = None,
) -> Path:
    """Write ``out_dir/summary.json`` atomically: the job's keys and its set-level metrics.

    Args:
        summary: metric name -> entry {value, ci_low, ci_high, n, backbone, and optionally note, ...}.
        out_dir: the job folder (created when absent).
        job: ``study``, ``split``, ``seed``, ``generator`` (and optionally ``arm``) of the job.
        tracker: where the file is logged as an artifact (None: nowhere).

    Returns:
        The path written.
    """
    path = Path(out_dir) / SUMMARY_FILE
    keys = _job_keys(job, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_json_safe({**keys, "metrics": dict(summary)}), indent=2, sort_keys=True) + "\n"
    write_text_atomic(path, text)
    if tracker is not None:
        tracker.log_artifact(path)
    return path


def _job_keys(job: Mapping[str, Any], where: str | Path) -> dict[str, Any]:
    keys = {"arm": "", **job}
    missing = [k for k in JOB_KEYS if k not in keys]
    extra = [k for k in keys if k not in JOB_KEYS]
    if missing or extra:
        raise DataError(where, f"job keys: missing {missing}, unexpected {extra} (expected {', '.join(JOB_KEYS)})")
    return {k: keys[k] for k in JOB_KEYS}


def read_summaries(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Set-level rows from ``summary.json`` files: one row per metric, ``case_id`` empty.

    Args:
        paths: the files.

    Returns:
        One frame in :data:`SET_COLUMNS` (empty text fields are None, as in rows read from CSV).

    Raises:
        DataError: naming a file that is not JSON or lacks the job's keys or its metrics.
    """
    rows = []
    for path in paths:
        try:
            d = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(path, f"cannot read as JSON: {exc}") from None
        if not isinstance(d, dict) or not isinstance(d.get("metrics"), dict):
            raise DataError(path, "no 'metrics' object: not a summary written by write_summary")
        keys = _job_keys({k: v for k, v in d.items() if k != "metrics"}, path)
        keys = {k: (None if v == "" else v) for k, v in keys.items()}
        for name, e in d["metrics"].items():
            fields = {k: e.get(k) for k in ("value", "ci_low", "ci_high", "n", "backbone")}
            rows.append({**keys, "case_id": None, "metric": name, "reason": None, **fields, "note": e.get("note")})
    return pd.DataFrame(rows, columns=list(SET_COLUMNS))
