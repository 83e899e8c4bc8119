"""The cost plan: its memory measurement, its voxel scaling against a measured peak, its FLOPs against the counter,
and ``sweep.py --plan`` on a study whose dataset is not on disk."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.config import load_config
from benchmark.profiling import plan
from benchmark.profiling.flops import network_step_flops
from benchmark.profiling.plan import StageCost, peak_bytes, state_bytes
from benchmark.run.sweep import main
from benchmark.segmentation.model import TARGET_CLASSES, Segmenter

REPO = Path(__file__).resolve().parents[1]
SMALL_UNET = ["segmentation.channels=[4,8,16,32]", "segmentation.strides=[2,2,2]", "segmentation.num_res_units=1"]


def test_peak_bytes_sees_a_tensor_that_lives_only_inside_the_call():
    size = 64 * 2**20

    def work() -> None:
        x = torch.ones(size // 4)
        del x

    assert peak_bytes(work) == pytest.approx(size, rel=0.05)


MEASURE = """
import json, sys
from benchmark.config import load_config
from benchmark.profiling.plan import model_costs
cfg = load_config(sys.argv[1], sys.argv[2:])
full = (64, 64, 32)
planned = model_costs("unet", cfg, full, 2, "fp32", (32, 32, 16))[0]
measured = model_costs("unet", cfg, full, 2, "fp32", full)[0]  # the same step run at the full shape
print(json.dumps([planned.activation_bytes, measured.activation_bytes, planned.flops, measured.flops]))
"""


def test_activation_scaled_from_a_reduced_shape_matches_the_measured_peak_and_flops_match_the_counter():
    # resident-set peaks are measured in a fresh process: after hundreds of tests this one's allocator state
    # (cached arenas, other threads' pools) shifts them by more than the tolerance under test
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(REPO / "configs" / "default.yaml"), *SMALL_UNET],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    planned_bytes, measured_bytes, planned_flops, measured_flops = json.loads(out.stdout.strip().splitlines()[-1])
    assert measured_bytes > 20 * 2**20
    assert planned_bytes == pytest.approx(measured_bytes, rel=0.15)
    cfg = load_config(REPO / "configs" / "default.yaml", SMALL_UNET)
    full = (64, 64, 32)
    seg = dataclasses.replace(cfg.segmentation, patch=None)
    net = Segmenter(seg, np.ones(TARGET_CLASSES[seg.target], dtype=np.float32)).networks["unet"]
    assert measured_flops == network_step_flops(net, (2, 1, *full), device="cpu")
    assert planned_flops == measured_flops  # convolutions scale exactly with voxels


def test_zero_stages_shard_optimizer_state_and_gradients():
    cost = StageCost(
        model="m", stage="s", networks=("g",), params_all=150, params_stage=100, flops=1.0, activation_bytes=0.0,
        shape=(8, 8, 8), shape_measured=(8, 8, 8), batch=1, precision="fp16", config_steps=1,
    )  # fmt: skip
    assert state_bytes(cost, zero_stage=0, ranks=4, deepspeed=True) == {"weights": 600, "grads": 400, "optimizer": 1200}
    assert state_bytes(cost, zero_stage=2, ranks=4, deepspeed=True) == {"weights": 600, "grads": 100, "optimizer": 300}
    assert state_bytes(cost, zero_stage=1, ranks=4, deepspeed=False)["optimizer"] == 200


def test_plan_needs_no_dataset_and_writes_nothing_into_the_study(tmp_path, monkeypatch, capsys):

    def stub(model, cfg, shape, batch, precision, measured):
        return [StageCost(
            model=model, stage="s", networks=("n",), params_all=10**6, params_stage=10**6, flops=1e12,
            activation_bytes=40 * 2**30 if model == "unet" else 2**30, shape=shape, shape_measured=measured,
            batch=batch, precision=precision, config_steps=100,
        )]  # fmt: skip

    monkeypatch.setattr(plan, "model_costs", stub)
    out = tmp_path / "runs"
    argv = ["--plan", "--config", str(REPO / "configs" / "default.yaml"), "--generators", "pix2pix3d",
            "--plan-gpu", "V100-SXM2", "--plan-csv", str(tmp_path / "plan.csv"), "--seeds", "0",
            "data.kind=la2018", f"data.root={tmp_path / 'absent'}", f"output_dir={out}",
            "robustness.enabled=false"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "154 scans" in text and "study total:" in text
    misfits = next(line for line in text.splitlines() if line.startswith("does not fit:"))
    assert "segmentation real s" in misfits and "generator" not in misfits  # 40 GiB of activations > 32 GiB
    assert not out.exists() and (tmp_path / "plan.csv").is_file()


def test_a_model_that_cannot_train_at_the_reduced_shape_is_measured_at_the_smallest_shape_it_trains_at():
    tried = []

    def costs(model, cfg, shape, batch, precision, measured):
        tried.append(measured)
        if measured[0] * measured[1] * measured[2] < 128 * 64 * 64:  # a one-voxel bottleneck below this
            raise ValueError("Expected more than 1 spatial element when training")
        return ["measured"]

    assert plan.smallest_costs("spade_ldm", None, (256, 256, 64), 1, "fp16", costs) == ["measured"]
    assert tried == [(64, 64, 64), (128, 64, 64)]  # the most reduced axis doubled first
    with pytest.raises(ValueError, match="spatial element"):  # at the study's own shape the error is the model's
        plan.smallest_costs("x", None, (64, 64, 64), 1, "fp32", costs)
