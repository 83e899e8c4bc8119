"""The engine's batch loader: ``train.loader_workers`` (its resolution and its errors) and batches that stay a pure
function of the step for any number of loader workers and after a resume."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from benchmark.config import AugmentConfig, SegmentationConfig, load_config
from benchmark.engine import batches as batches_mod
from benchmark.engine.batches import Batches, resolve_loader_workers
from benchmark.errors import ConfigError
from benchmark.segmentation.arms import ArmItem
from benchmark.segmentation.train import make_batch_fn

# the segmenter's real MONAI pipeline, elastic included, cropping 12^3 patches from 16^3 volumes
SEG = SegmentationConfig(
    batch_size=2, patch=(12, 12, 12),
    augment=AugmentConfig(flip=0.5, affine=0.5, elastic=0.5, elastic_magnitude=(2.0, 4.0), noise=0.5, gamma=0.5,
                          bias_field=0.5, blur=0.5),
)  # fmt: skip
KEY, STEPS = (7, 0, 1), 6


def _items() -> list[ArmItem]:
    rng = np.random.default_rng(0)
    out = []
    for k in range(3):
        label = (rng.random((16, 16, 16)) > 0.7).astype(np.int64)
        image = (label * 0.6 + rng.normal(0, 0.1, (16, 16, 16))).astype(np.float32)
        out.append(ArmItem(image=image, target=label, origin="real", source_case_id=f"c{k}"))
    return out


def _with_pid(fn):
    def batch_fn(step, rng):
        return fn(step, rng) | {"pid": torch.tensor(os.getpid())}

    return batch_fn


def _collect(batch_fn, workers: int, first: int = 0) -> tuple[list[dict], set[int]]:
    with Batches(_with_pid(batch_fn), KEY, STEPS, 2, first, False, workers) as loader:
        got = [loader.get(step) for step in range(first, STEPS)]
    return got, {int(b.pop("pid")) for b in got}


def test_batches_are_bit_identical_for_0_1_2_workers_and_after_a_resume():
    fn = make_batch_fn(_items(), SEG)
    runs = {w: _collect(fn, w) for w in (0, 1, 2)}
    assert runs[0][1] == {os.getpid()} and len(runs[1][1]) == 1 and len(runs[2][1]) == 2  # two workers took turns
    resumed, _ = _collect(fn, 2, first=3)  # a run resumed from the checkpoint of step 3
    for w in (1, 2):
        for a, b in zip(runs[0][0], runs[w][0], strict=True):
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    for a, b in zip(runs[0][0][3:], resumed, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert runs[0][0][0]["image"].shape == (2, 1, 12, 12, 12)
    assert not torch.equal(runs[0][0][0]["image"], runs[0][0][1]["image"])  # the steps do differ


def test_auto_loader_workers_are_the_jobs_cpus_minus_one(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(batches_mod.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert resolve_loader_workers("auto") == resolve_loader_workers(None) == 7
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")  # the allocation caps an unbound affinity mask
    assert resolve_loader_workers("auto") == 3
    monkeypatch.setattr(batches_mod.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert resolve_loader_workers("auto") == 1  # one CPU: still one worker
    assert resolve_loader_workers("auto", cpus=6) == 5  # the plan passes the job's cpus_per_task
    assert resolve_loader_workers("auto", cpus=64) == 8  # capped: each worker is a fork holding batches
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four torchrun ranks share the node's 64 CPUs
    assert resolve_loader_workers("auto", cpus=64) == 8 and resolve_loader_workers("auto", cpus=16) == 3
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert resolve_loader_workers(0) == 0 and resolve_loader_workers(3) == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "two")
    with pytest.raises(ConfigError, match=r"^train\.loader_workers: auto reads SLURM_CPUS_PER_TASK='two'") as err:
        resolve_loader_workers("auto")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value", ["-1", "many", "1.5", "true"])
def test_bad_loader_workers_are_one_line_errors_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"^train\.loader_workers: ") as err:
        load_config(None, [f"train.loader_workers={value}"])
    assert "\n" not in str(err.value)
    assert load_config(None, ["train.loader_workers=auto"]).train.loader_workers == "auto"
    assert load_config(None, ["train.loader_workers=2"]).train.loader_workers == 2
