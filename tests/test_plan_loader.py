"""The cost plan's data-path columns: loader workers, samples/s per worker, expected steps/s and the data-bound flag."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from benchmark.config import load_config
from benchmark.profiling import loader
from benchmark.profiling.plan import StageCost
from benchmark.profiling.plan_jobs import format_plan, plan_rows

REPO = Path(__file__).resolve().parents[1]
GPU = {"name": "T", "memory_gb": 80, "peaks": {"fp32": 1e12, "tf32": 1e12, "bf16": 1e12, "fp16": 1e12}}
GRAPH = [("g", "generator", {"generator": "pix2pix3d"}, ()), ("s", "segmentation", {"arm": "real"}, ())]


def _cost(model, cfg, shape, batch, precision, measured):
    # 0.1 TFLOP per step at 1 TFLOP/s and MFU 1: 0.1 s per step, 10 steps/s
    return [StageCost(
        model=model, stage="s", networks=("n",), params_all=10**6, params_stage=10**6, flops=1e11,
        activation_bytes=2**30, shape=shape, shape_measured=measured, batch=batch, precision=precision,
        config_steps=100,
    )]  # fmt: skip


def _loader(cfg, kind):  # generators: 1000 samples/s per worker; segmentation: 5
    return (0.001, "fake") if kind == "generator" else (0.2, "fake")


@pytest.mark.parametrize(("overrides", "workers", "bound"), [
    (["cluster.cpus_per_task=3"], 2, "yes"),  # auto: 2 workers x 5 samples/s < batch 2 x 10 steps/s
    (["cluster.cpus_per_task=3", "train.loader_workers=4"], 4, ""),  # 4 x 5 = 20 samples/s: keeps up
    (["train.prefetch=0"], 0, "yes"),  # built in the step: one process, 5 < 20
])  # fmt: skip
def test_plan_rows_carry_loader_columns_and_flag_a_data_bound_job(overrides, workers, bound):
    cfg = load_config(REPO / "configs" / "default.yaml", ["segmentation.batch_size=2", *overrides])
    rows = plan_rows(cfg, GRAPH, gpu=GPU, mfu=1.0, cases=20, costs=_cost, loader=_loader)
    seg = next(r for r in rows if r["job kind"] == "segmentation real")
    gen = next(r for r in rows if r["job kind"].startswith("generator"))
    assert seg["loader workers"] == workers and seg["samples/s/worker"] == pytest.approx(5.0)
    assert seg["steps/s"] == pytest.approx(10.0) and seg["data-bound"] == bound
    assert gen["samples/s/worker"] == pytest.approx(1000.0) and gen["data-bound"] == ""
    text = format_plan(rows, "plan")
    assert text.splitlines()[-1] == "data-bound (loader slower than the GPU step): " + (
        "segmentation real s" if bound else "none"
    )


def test_loader_timing_weights_each_transform_by_its_probability(monkeypatch):
    cfg = load_config(REPO / "configs" / "default.yaml", ["segmentation.augment.elastic=0.5"])
    fake = {"crop": 0.01, "flip": 0.02, "affine": 0.1, "elastic": 1.0, "noise": 0.0, "blur": 0.0, "gamma": 0.0,
            "bias_field": 0.0}  # fmt: skip
    monkeypatch.setattr(loader, "transform_seconds", lambda seg, shape, repeats=1: fake)
    aug = cfg.segmentation.augment
    want = 0.01 + aug.flip * 0.02 + aug.affine * 0.1 + 0.5 * 1.0
    assert loader.sample_seconds(cfg.segmentation, (16, 16, 16)) == pytest.approx(want)
    monkeypatch.undo()
    parts = loader.transform_seconds(cfg.segmentation, (16, 16, 16))  # the real pipeline, timed once per transform
    assert set(parts) == {"crop"} | {f for f in loader.PROBABILITIES if getattr(aug, f) > 0}
    assert all(v >= 0 for v in parts.values()) and parts["crop"] > 0
    on_gpu = dataclasses.replace(cfg.segmentation, augment=dataclasses.replace(aug, device="cuda"))
    called = []
    monkeypatch.setattr(loader, "transform_seconds", lambda *a, **k: called.append(1) or fake)
    assert loader.sample_seconds(on_gpu, (16, 16, 16)) > 0 and not called  # on the GPU the workers only draw
