"""launchers/gpu_check.py on the CPU at a tiny shape (what CI can run), and the build check against faked GPUs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmark.errors import ConfigError
from benchmark.profiling.gpu_check import check_build, wheel_for
from launchers.gpu_check import main

REPO = Path(__file__).resolve().parents[1]
CU128 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]  # no Volta
CU126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path")
def test_gpu_check_runs_on_the_cpu_and_writes_its_csv(tmp_path, capsys):
    tiny = ["preprocess.shape=[32,32,16]", "train.threads=1", "generators.pix2pix3d.features=[4,4,8,8,16,4]",
            "generators.pix2pix3d.d_channels=4", "segmentation.channels=[4,8,16,32,64]"]  # fmt: skip
    argv = ["--config", str(REPO / "configs" / "default.yaml"), "--generators", "pix2pix3d", "--steps", "2"]
    assert main([*argv, "--out", str(tmp_path), *tiny]) == 0
    table = pd.read_csv(tmp_path / "gpu_check.csv", keep_default_na=False)
    assert list(table.check) == ["build", "nccl", "step", "step"]
    assert table.status.tolist() == ["no GPU", "skipped", "ok", "ok"]
    assert "no GPU found" in table.detail[0]
    steps = table[table.check == "step"]
    assert [tuple(r) for r in steps[["network", "stage"]].values] == [("pix2pix3d", "gan"), ("unet", "segmentation")]
    assert (steps.step_s.astype(float) > 0).all() and (steps.peak_mem_gib.astype(float) > 0).all()
    assert set(steps["shape"]) == {"32x32x16"} and set(steps["precision"]) == {"fp32"}
    assert "no GPU found" in capsys.readouterr().out


def _fake_gpu(monkeypatch, capability, arch_list, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: capability)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: arch_list)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: name)


def test_a_v100_on_the_cu128_build_names_the_cu126_wheels(monkeypatch):
    _fake_gpu(monkeypatch, (7, 0), CU128, "Tesla V100-SXM2-32GB")
    with pytest.raises(ConfigError) as err:
        check_build()
    message = str(err.value)
    assert "\n" not in message and "Tesla V100-SXM2-32GB (sm_70)" in message
    assert "install the cu126 wheels" in message and "download.pytorch.org/whl/cu126" in message


@pytest.mark.parametrize(("capability", "arch_list"), [((7, 0), CU126), ((9, 0), CU128), ((12, 0), CU128)])
def test_covered_gpus_pass_the_build_check(monkeypatch, capability, arch_list):
    _fake_gpu(monkeypatch, capability, arch_list, "GPU")
    row = check_build()
    assert row["status"] == "ok" and f"sm_{capability[0]}{capability[1]}" in row["detail"]


def test_wheel_for_each_generation():
    assert [wheel_for(c) for c in ((6, 0), (7, 0), (7, 5), (8, 0), (9, 0), (12, 0))] == ["cu126"] * 2 + ["cu128"] * 4


@pytest.mark.slow
def test_all_reduce_check_sums_over_two_processes():
    from benchmark.engine.distributed import all_reduce_check

    result = all_reduce_check(2, "gloo", numel=1024, repeats=2)  # the NCCL check's code path, on CPU processes
    assert result["ok"] and result["world"] == 2 and result["bus_bytes_per_s"] > 0
