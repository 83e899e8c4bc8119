"""Throughput profiling: FLOP counts against closed forms, the grid's CSV, MFU only on known GPUs."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from monai.networks.nets import UNet
from torch import nn

from benchmark.errors import ConfigError
from benchmark.profiling import model as profiling_model
from benchmark.profiling.flops import conv3d_flops, count_flops, network_step_flops, unet_training_flops
from benchmark.profiling.grid import GridOptions, build_grid, group_grid, run_profile
from benchmark.profiling.measure import ProfilePoint
from benchmark.profiling.results import COLUMNS, failed_row, finish_row

REPO = Path(__file__).resolve().parents[1]


def _data_overrides(root: Path) -> tuple[str, ...]:
    return (
        f"data.cache_dir={root / 'cache'}", "data.phantom.n_patients=3", "data.phantom.scans_per_patient=[1,1]",
        "data.phantom.shape=[32,32,16]", "preprocess.shape=[32,32,16]", "preprocess.spacing=null",
    )  # fmt: skip


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def test_conv3d_flops_match_closed_form():
    torch.manual_seed(0)
    conv = nn.Conv3d(3, 5, kernel_size=3, padding=1)
    x = torch.randn(2, 3, 8, 6, 4, requires_grad=True)
    assert count_flops(lambda: conv(x)) == conv3d_flops(3, 5, 3, 8 * 6 * 4, batch=2) == 2 * 2 * 3 * 5 * 27 * 192
    assert count_flops(lambda: conv(x).sum().backward()) == conv3d_flops(3, 5, 3, 192, batch=2, training=True)
    frozen_input = x.detach()  # no input gradient: weight gradient only, 2x forward
    assert count_flops(lambda: conv(frozen_input).sum().backward()) == 2 * conv3d_flops(3, 5, 3, 192, batch=2)
    up = nn.ConvTranspose3d(4, 2, kernel_size=3, stride=2, padding=1, output_padding=1)
    assert count_flops(lambda: up(torch.randn(1, 4, 4, 4, 2))) == conv3d_flops(4, 2, 3, 32)  # per input voxel


def test_unet_counter_matches_closed_form_on_meta_device():
    with torch.device("meta"):
        net = UNet(3, 1, 3, (4, 8, 16, 32), (2, 2, 2), num_res_units=2, norm="INSTANCE")
    counted = network_step_flops(net, (2, 1, 32, 32, 16))
    assert counted == unet_training_flops((32, 32, 16), (4, 8, 16, 32), (2, 2, 2), 2, out_channels=3, batch=2)


def test_grid_runs_every_column_and_ratios(tmp_path):
    opts = GridOptions(
        model="unet", tiny=True, steps=2, warmup=1, rounds=2, threads=1, isolate=False, tracking=False,
        executor="debug", out=str(tmp_path / "prof"), overrides=_data_overrides(tmp_path),
    )  # fmt: skip
    csv, summary = run_profile(opts)
    df = pd.read_csv(csv)
    assert list(df.columns) == list(COLUMNS)
    assert sorted(zip(df["mode"], df["data"], strict=True)) == [("bare", "memory"), ("suite", "loader"),
                                                                  ("suite", "memory")]  # fmt: skip
    assert (df["status"] == "ok").all() and summary["failed"] == 0
    assert (df["rounds"] == 2).all()  # baseline, reference and loader check alternated twice in one process
    # batch 2 of the tiny U-Net (widths 4..64, one residual unit, 2 classes), counted through the engine
    expected = unet_training_flops((32, 32, 16), (4, 8, 16, 32, 64), (2, 2, 2, 2), 1, batch=2)
    assert (df["flops_per_step"] == expected).all()
    suite = df[(df["mode"] == "suite") & (df["data"] == "memory")].iloc[0]
    bare = df[df["mode"] == "bare"].iloc[0]
    # the ratios are the medians' quotients (their values are timings: figures for a note, not for a timed test)
    assert suite["suite_over_bare"] == pytest.approx(suite["step_s_median"] / bare["step_s_median"])
    assert suite["step_s_q25"] <= suite["step_s_median"] <= suite["step_s_q75"]
    assert suite["samples_per_s"] == pytest.approx(2 / suite["step_s_median"])
    parts = suite[["data_s_median", "forward_s_median", "backward_s_median", "optimizer_s_median"]]
    # each part lies inside its step's period, so (order statistics) each part's median is at most the step's
    assert (parts >= 0).all() and (parts <= suite["step_s_median"]).all()
    assert suite["opt_state_bytes_per_rank"] > 0 and suite["peak_mem_bytes"] > 0
    loader = df[df["data"] == "loader"].iloc[0]
    assert loader["loader_over_memory"] == pytest.approx(loader["step_s_median"] / suite["step_s_median"])
    assert loader["data_s_median"] > suite["data_s_median"]  # a queue read from another process vs a dict lookup
    assert loader["peak_mem_loader_bytes"] > 2**20  # the loader process's own peak RSS
    assert df.loc[df["data"] == "memory", "peak_mem_loader_bytes"].isna().all()
    for _, row in df.iterrows():  # every empty cell is explained
        reasons = row["na_reasons"] if isinstance(row["na_reasons"], str) else ""
        for col in COLUMNS:
            if col not in ("na_reasons",) and pd.isna(row[col]):
                assert f"{col}: " in reasons, (row["point"], col)
    assert pd.isna(suite["mfu"]) and "mfu: no dense peak for cpu devices" in suite["na_reasons"]
    assert suite["device_name"].startswith("cpu: ") and suite["threads"] == 1
    plots = _report_module().plot_profile([csv], tmp_path / "plots")
    assert plots and all(p.is_file() and p.stat().st_size > 1000 for p in plots)


def _report_module():
    spec = importlib.util.spec_from_file_location("profile_report", REPO / "analysis" / "profile_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_diffusion_rows_time_both_samplers(tmp_path):
    opts = GridOptions(
        model="spade_ldm", tiny=True, steps=2, warmup=1, threads=1, isolate=False, tracking=False,
        executor="debug", out=str(tmp_path / "prof"), loader=False, rounds=1,
        model_set={"num_train_timesteps": 12, "ddim_steps": 3}, overrides=_data_overrides(tmp_path),
    )  # fmt: skip
    _, summary = run_profile(opts)
    df = pd.read_csv(Path(opts.out) / "profile.csv")
    assert list(df["stage"]) == ["autoencoder", "diffusion"] * 2 and list(df["mode"]) == ["suite"] * 2 + ["bare"] * 2
    assert df["suite_over_bare"].iloc[:2].notna().all()
    df = df[df["mode"] == "suite"]
    assert (df["ddpm_steps"] == 12).all() and (df["ddim_steps"] == 3).all()
    assert (df["sample_ddpm_s"] > 0).all() and (df["sample_ddim_s"] > 0).all()
    assert (df["model_overrides"] == "r1_warmup=0").all()  # steady-state steps: the R1 penalty runs from step 0
    assert df["flops_per_step"].iloc[0] != df["flops_per_step"].iloc[1]
    assert summary["stages"]["spade_ldm/diffusion"]["ddim_speedup"] > 0


def test_grid_axes_and_errors(tmp_path):
    from benchmark.config import load_config

    cfg = load_config(REPO / "configs" / "default.yaml")
    opts = GridOptions(model="unet", engines=("torch", "deepspeed"), zero=(1, 2), ranks=(1, 2),
                       precisions=("fp32", "bf16"), out=str(tmp_path))  # fmt: skip
    grid = build_grid(opts, cfg)
    keys = [p.key for p in grid]
    assert len(keys) == len(set(keys)) == 2 * 2 * (1 + 2) + 2 + 1  # suite points, bare per precision, loader
    assert keys[0] == "unet/suite-memory/torch/fp32/r1" and grid[0].sampling
    assert grid[0].batch_size == cfg.segmentation.batch_size and grid[0].shape == (32, 32, 16)
    assert [(p.mode, p.data) for p in grid[:3]] == [("suite", "memory"), ("bare", "memory"), ("suite", "loader")]
    assert sum(p.mode == "bare" for p in grid) == 2 and grid[-1].mode == "bare" and grid[-1].precision == "bf16"
    groups = group_grid(grid, opts)
    assert [len(g) for g in groups] == [3] + [1] * (len(grid) - 3) and groups[0][0] is grid[0]
    with pytest.raises(ConfigError, match="--zero 3"):
        build_grid(GridOptions(model="unet", engines=("deepspeed",), zero=(3,)), cfg)
    with pytest.raises(ConfigError, match="need warmup >= 1"):
        ProfilePoint(model="unet", shape=(16, 16, 16), batch_size=1, warmup=0)
    with pytest.raises(ConfigError, match="choose 'unet' or a generator"):
        profiling_model.build_model(ProfilePoint(model="vae", shape=(16, 16, 16), batch_size=1), cfg)


def test_failed_row_has_every_column():
    point = ProfilePoint(model="unet", shape=(16, 16, 16), batch_size=1, engine="deepspeed", zero_stage=2, ranks=2)
    row = failed_row(point, "TrainingError: worker exited with code 1\ntraceback...")
    assert list(row) == list(COLUMNS) or set(row) == set(COLUMNS)
    assert row["status"] == "failed: TrainingError: worker exited with code 1"
    assert row["zero_stage"] == 2 and _nan(row["step_s_median"])
    assert "step_s_median: the configuration failed" in row["na_reasons"]


@pytest.mark.parametrize(
    ("name", "precision", "peak"),
    [("NVIDIA H100 80GB HBM3", "fp32", 494.7e12), ("NVIDIA H200", "bf16", 989.4e12),
     ("Tesla V100-SXM2-32GB", "fp32", 15.7e12), ("NVIDIA A100-SXM4-80GB", "fp16", 312e12),
     ("NVIDIA H100 PCIe", "fp32", None), ("NVIDIA H200 NVL", "bf16", None), ("Tesla V100-SXM2-16GB", "bf16", None)],
)  # fmt: skip
def test_mfu_only_for_known_gpus(monkeypatch, name, precision, peak):
    monkeypatch.setattr(profiling_model, "device_name", lambda device: name)
    values, reasons = profiling_model.peak_flops(torch.device("cuda"), precision, 1e12)
    if peak is None:
        assert values == {} and set(reasons) == {"peak_flops_per_s", "peak_dtype", "mfu"}
        row = finish_row({"mfu": math.nan}, reasons)
        assert _nan(row["mfu"]) and "mfu: " in row["na_reasons"]
    else:
        assert values["peak_flops_per_s"] == peak and values["mfu"] == pytest.approx(1e12 / peak)


def test_no_peak_for_cpu():
    values, reasons = profiling_model.peak_flops(torch.device("cpu"), "fp32", 5e9)
    assert values == {} and "no dense peak for cpu devices" in reasons["mfu"]


def test_bare_reference_computes_the_same_numbers_as_the_engine(tmp_path):
    import dataclasses

    from benchmark.config import load_config, to_dict
    from benchmark.engine.loop import fit
    from benchmark.profiling.measure import _Profiled
    from benchmark.profiling.model import bare_loop, build_model, memory_batch

    cfg = load_config(REPO / "configs" / "default.yaml")
    point = ProfilePoint(model="spade_gan", shape=(32, 32, 16), batch_size=2, steps=2, warmup=1, tiny=True,
                         config=to_dict(cfg))  # fmt: skip
    weights = {}
    for mode in ("suite", "bare"):
        torch.manual_seed(0)
        model, n, _ = build_model(point, cfg)
        prof, batch = _Profiled(model, torch.device("cpu")), memory_batch(point, n)
        if mode == "bare":
            bare_loop(prof, batch, point, torch.device("cpu"))
        else:
            train = dataclasses.replace(cfg.train, threads=1, checkpoint_every=0)
            steps = {"gan": 4}
            fit(prof, lambda s, r, b=batch: b, train=train, out_dir=tmp_path, seed=0, resume=False, stage_steps=steps)
        weights[mode] = {k: v.clone() for net in model.networks.values() for k, v in net.state_dict().items()}
    # same noise, dropout and updates: same trajectory, so timing differences are the engine's alone
    assert all(torch.equal(weights["suite"][k], weights["bare"][k]) for k in weights["suite"])
