"""The contract every registered generator meets (a new registry line gets these tests for free)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.config import TrainConfig
from benchmark.engine.loop import fit
from benchmark.generators import GENERATORS

SHAPE = (32, 32, 16)
NUM_CLASSES = 4
TRAIN = TrainConfig(engine="torch", batch_size=2, log_every=1, checkpoint_every=100, threads=1)


def _batch_fn(step: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    # blocky label maps with a label-dependent intensity: something learnable
    coarse = rng.integers(0, NUM_CLASSES, size=(2, 1, 4, 4, 2))
    label = torch.from_numpy(coarse).repeat_interleave(8, 2).repeat_interleave(8, 3).repeat_interleave(8, 4)
    noise = rng.standard_normal((2, 1, *SHAPE)).astype(np.float32)
    image = label.float() / (NUM_CLASSES - 1) + 0.05 * torch.from_numpy(noise)
    return {"image": image, "label": label.long()}


def _build(name: str):
    spec = GENERATORS[name]
    torch.manual_seed(0)
    return spec.build(spec.config_cls.tiny(), NUM_CLASSES, SHAPE)


def _steps(model, last: int, others: int = 2) -> dict[str, int]:
    stages = model.stages()
    return {s.name: (last if i == len(stages) - 1 else others) for i, s in enumerate(stages)}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_config_has_tiny_variant(name):
    spec = GENERATORS[name]
    tiny = spec.config_cls.tiny()
    assert isinstance(tiny, spec.config_cls)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_two_steps_finite_and_sample_shape(name, tmp_path):
    model = _build(name)
    result = fit(model, _batch_fn, train=TRAIN, out_dir=tmp_path, seed=0, stage_steps=_steps(model, 2))
    assert result.steps == sum(_steps(model, 2).values())
    assert result.history, "no losses were logged"
    for entry in result.history:
        for key, value in entry.items():
            if isinstance(value, float) and key != "steps_per_s":
                assert math.isfinite(value), f"{key} at step {entry['step']} is {value}"
    label = torch.from_numpy(np.random.default_rng(1).integers(0, NUM_CLASSES, size=(2, 1, *SHAPE)))
    out = model.sample(label, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, *SHAPE)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # sampling leaves no autograd graph behind
    assert not out.requires_grad


class _Crash(Exception):
    pass


def _crashing_batch_fn(after_calls: int):
    calls = []

    def batch_fn(step, rng):
        if len(calls) == after_calls:
            raise _Crash
        calls.append(step)
        return _batch_fn(step, rng)

    return batch_fn


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_resume_is_bit_identical(name, tmp_path):
    """3 steps straight == 2 steps, a crash, a fresh model resumed from the checkpoint, 1 step."""
    steps = _steps(_build(name), 3)
    # prefetch=0: the crash counts batch_fn calls, which a loader process would count in its own copy
    train = TrainConfig(engine="torch", batch_size=2, log_every=1, checkpoint_every=1, threads=1, prefetch=0)
    straight = fit(_build(name), _batch_fn, train=train, out_dir=tmp_path / "a", seed=3, stage_steps=steps)
    # same schedule lengths as the straight run (cosine schedulers depend on them); the job dies in the last step
    with pytest.raises(_Crash):
        fit(_build(name), _crashing_batch_fn(sum(steps.values()) - 1), train=train, out_dir=tmp_path / "b", seed=3,
            stage_steps=steps)  # fmt: skip
    resumed = fit(_build(name), _batch_fn, train=train, out_dir=tmp_path / "b", seed=3, stage_steps=steps)
    assert resumed.resumed_from is not None and resumed.resumed_from.name == f"ckpt-{straight.steps - 1:09d}"
    assert len(resumed.timings) == 1, "exactly the one remaining step must be trained after resuming"
    assert resumed.final_losses == straight.final_losses
    assert resumed.steps == straight.steps
