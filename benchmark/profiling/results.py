"""Profiling results: the CSV columns (every one always present, NaN with a reason), the ratios between rows,
the headline summary, the CSV file and the MLflow runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmark.atomic import atomic_path

COLUMNS: tuple[str, ...] = (
    "point", "model", "stage", "mode", "data", "shape", "batch_size", "engine", "zero_stage", "precision", "ranks",
    "compile", "channels_last", "steps", "warmup", "rounds",
    "step_s_median", "step_s_q25", "step_s_q75", "step_s_iqr", "samples_per_s",
    "data_s_median", "forward_s_median", "backward_s_median", "optimizer_s_median", "other_s_median",
    "peak_mem_bytes", "peak_mem_source", "peak_mem_loader_bytes", "opt_state_bytes_per_rank",
    "opt_state_bytes_all_ranks",
    "flops_per_step", "achieved_flops_per_s", "peak_flops_per_s", "peak_dtype", "mfu",
    "sample_s", "sample_ddim_s", "sample_ddpm_s", "ddim_steps", "ddpm_steps",
    "suite_over_bare", "loader_over_memory",
    "device_type", "device_name", "torch_version", "cuda_version", "cudnn_version", "deepspeed_version",
    "monai_version", "threads", "hostname", "model_overrides", "status", "na_reasons",
)  # fmt: skip


_REASONS = {
    "zero_stage": "ZeRO stages apply to the DeepSpeed engine only",
    "sample_s": "sampling is timed once per run, in the baseline configuration",
    "sample_ddim_s": "the model has no DDIM sampler (or sampling was not timed here)",
    "sample_ddpm_s": "the model has no DDPM sampler (or sampling was not timed here)",
    "ddim_steps": "no DDIM sampler timed here",
    "ddpm_steps": "no DDPM sampler timed here",
    "suite_over_bare": "not a suite row with in-memory data, or no matching bare reference in this run",
    "loader_over_memory": "not a data=loader row, or no matching data=memory row in this run",
    "peak_mem_loader_bytes": "no batch loader process here (in-memory data or train.prefetch=0)",
    "cuda_version": "torch is a CPU build",
    "cudnn_version": "no cuDNN in this torch build",
    "deepspeed_version": "DeepSpeed is not installed",
}


def finish_row(row: dict[str, Any], reasons: dict[str, str] | None = None) -> dict[str, Any]:
    """Give ``row`` every column of ``COLUMNS`` (NaN where missing) and explain each NaN in ``na_reasons``.

    Args:
        row: measured values; an existing ``na_reasons`` (``"column: why; ..."``) is kept.
        reasons: extra column -> reason entries.

    Returns:
        The completed row (same dict).
    """
    known = dict(_REASONS)
    known.update(reasons or {})
    given = dict(item.split(": ", 1) for item in filter(None, str(row.get("na_reasons") or "").split("; ")))
    for col in COLUMNS:
        value = row.get(col, math.nan)
        row[col] = value
        if col in ("na_reasons", "status") or not (isinstance(value, float) and math.isnan(value)):
            given.pop(col, None)
            continue
        given.setdefault(col, known.get(col, "not measured in this configuration"))
    row.setdefault("status", "ok")
    if isinstance(row["status"], float):
        row["status"] = "ok"
    row["na_reasons"] = "; ".join(f"{k}: {v}" for k, v in given.items())
    return row


def _key(row: dict[str, Any], cols: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(str(row[c]) for c in cols)  # str(): NaN never equals NaN as a dict key otherwise


_MATCH = ("model", "stage", "shape", "batch_size", "precision", "compile", "channels_last")


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Fill ``suite_over_bare`` (suite rows with in-memory data) and ``loader_over_memory`` (loader rows)."""
    ok = [r for r in rows if r["status"] == "ok"]
    bare = {_key(r, _MATCH): r for r in ok if r["mode"] == "bare"}
    full = _MATCH + ("engine", "zero_stage", "ranks")
    memory = {_key(r, full): r for r in ok if r["mode"] == "suite" and r["data"] == "memory"}
    for r in ok:
        if r["mode"] == "suite" and r["data"] == "memory" and _key(r, _MATCH) in bare:
            r["suite_over_bare"] = r["step_s_median"] / bare[_key(r, _MATCH)]["step_s_median"]
        if r["data"] == "loader" and _key(r, full) in memory:
            r["loader_over_memory"] = r["step_s_median"] / memory[_key(r, full)]["step_s_median"]
        finish_row(r)


def failed_row(point: Any, error: str) -> dict[str, Any]:
    """A row for a configuration that did not finish: its settings, ``status=failed: ...``, NaN elsewhere."""
    first = next((line for line in str(error).splitlines() if line.strip()), "unknown error")
    row = {
        "point": point.key, "model": point.model, "stage": "all", "mode": point.mode, "data": point.data,
        "shape": "x".join(map(str, point.shape)), "batch_size": point.batch_size, "engine": point.engine,
        "zero_stage": math.nan if point.zero_stage is None else point.zero_stage, "precision": point.precision,
        "ranks": point.ranks, "compile": point.compile, "channels_last": point.channels_last, "steps": point.steps,
        "warmup": point.warmup, "rounds": 0, "status": f"failed: {first[:300]}",
    }  # fmt: skip
    return finish_row(row, {c: "the configuration failed (see status)" for c in COLUMNS})


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline figures: overhead and data-path ratios, sampling speed-up, ZeRO-2 on 2 ranks vs 1 rank."""
    ok = [r for r in rows if r["status"] == "ok"]
    out: dict[str, Any] = {"rows": len(rows), "failed": len(rows) - len(ok), "stages": {}}
    for r in ok:
        entry = out["stages"].setdefault(f"{r['model']}/{r['stage']}", {})
        if r["mode"] == "suite" and r["data"] == "memory" and not math.isnan(r["suite_over_bare"]):
            entry.setdefault("suite_over_bare", {})[r["point"]] = r["suite_over_bare"]
        if r["data"] == "loader" and not math.isnan(r["loader_over_memory"]):
            entry["loader_over_memory"] = r["loader_over_memory"]
        if not math.isnan(r["sample_ddpm_s"]):
            entry.update(sample_ddim_s=r["sample_ddim_s"], sample_ddpm_s=r["sample_ddpm_s"],
                         ddim_speedup=_ratio(r["sample_ddpm_s"], r["sample_ddim_s"]))  # fmt: skip
        entry.setdefault("flops_per_step", r["flops_per_step"])
    suite = [r for r in ok if r["mode"] == "suite" and r["data"] == "memory"]
    for z in (r for r in suite if r["engine"] == "deepspeed" and r["zero_stage"] == 2 and r["ranks"] == 2):
        same = [r for r in suite if _key(r, _MATCH) == _key(z, _MATCH) and r["ranks"] == 1]
        single = next((r for r in same if r["engine"] == "torch"), None) or next(iter(same), None)
        if single is None:
            continue
        out["stages"][f"{z['model']}/{z['stage']}"]["zero2_2ranks_vs_1rank"] = {
            "reference": single["point"],
            "opt_state_bytes_per_rank": [single["opt_state_bytes_per_rank"], z["opt_state_bytes_per_rank"]],
            "opt_state_ratio": _ratio(z["opt_state_bytes_per_rank"], single["opt_state_bytes_per_rank"]),
            "samples_per_s": [single["samples_per_s"], z["samples_per_s"]],
            "throughput_ratio": _ratio(z["samples_per_s"], single["samples_per_s"]),
        }
    return out


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write the rows with exactly ``COLUMNS`` (atomically)."""
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pd.DataFrame([finish_row(dict(r)) for r in rows], columns=list(COLUMNS)).to_csv(tmp, index=False)
    return path


_IDENTITY = ("model", "stage", "mode", "data", "shape", "batch_size", "engine", "zero_stage", "precision", "ranks",
             "compile", "channels_last", "steps", "warmup", "rounds")  # fmt: skip


def log_profile(rows: list[dict[str, Any]], summary: dict[str, Any], csv: Path, opts: Any) -> str:
    """Log the run to MLflow: a parent run (CSV + summary) and one child run per row, in the profiling experiment.

    Args:
        rows: the completed rows.
        summary: from ``summarise``.
        csv: the written CSV (an artifact of the parent run).
        opts: tracking URI (default: ``sqlite`` in the output folder) and experiment name.

    Returns:
        The parent run id.
    """
    from benchmark.tracking.tracker import MLflowTracker, check_reachable, default_uri, ensure_experiment

    out = Path(opts.out)
    uri = opts.tracking_uri or default_uri(out)
    check_reachable(uri)
    exp = ensure_experiment(uri, opts.experiment, artifact_dir=out / "mlartifacts")
    parent = MLflowTracker(uri, exp, f"profile/{opts.model}/{out.name}", tags={"stage": "profiling"})
    parent.log_params({"model": opts.model, "out": str(out), "config": opts.config_path or "defaults"})
    for row in rows:
        child = MLflowTracker(uri, exp, f"{row['point']}/{row['stage']}", parent_run_id=parent.run_id,
                              tags={"stage": "profiling", "status": row["status"]})  # fmt: skip
        child.log_params({k: row[k] for k in _IDENTITY})
        numeric = {k: float(v) for k, v in row.items() if k not in _IDENTITY and _is_number(v)}
        child.log_metrics({k: v for k, v in numeric.items() if not math.isnan(v)})
        child.set_tags({k: row[k] for k in COLUMNS if k not in _IDENTITY and k not in numeric})
        child.end("FINISHED" if row["status"] == "ok" else "FAILED")
    parent.log_artifact(csv)
    parent.log_artifact(out / "summary.json")
    parent.end()
    return parent.run_id


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
