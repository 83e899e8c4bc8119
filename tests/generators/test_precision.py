"""fp16 in the torch engine: autocast with a grad scaler per network, R1 by PyTorch's gradient-penalty recipe,
skipped and counted non-finite steps, scaler state through checkpoints, and bf16 refused where a GPU lacks it."""

from __future__ import annotations

import contextlib
import dataclasses
import math

import numpy as np
import pytest
import torch
from generator_contract import SHAPE, batch_fn, build_tiny, check_resume_is_bit_identical, stage_steps

from benchmark.config import SegmentationConfig, TrainConfig
from benchmark.engine.backends import penalty_grad
from benchmark.engine.contract import Stage
from benchmark.engine.device import check_precision
from benchmark.engine.loop import fit
from benchmark.errors import ConfigError, TrainingError
from benchmark.generators import GENERATORS
from benchmark.segmentation.model import Segmenter

FP16 = TrainConfig(engine="torch", precision="fp16", batch_size=2, log_every=1, checkpoint_every=100, threads=1)

torch.set_num_threads(1)  # as the other generator tests: tiny networks, one core each
pytestmark = pytest.mark.skipif(
    not torch.amp.is_autocast_available("cpu"), reason="this torch build has no CPU autocast"
)


def test_cpu_autocast_computes_convolutions_in_float16():
    with torch.autocast("cpu", dtype=torch.float16):
        out = torch.nn.Conv3d(1, 2, 3)(torch.randn(1, 1, 6, 6, 6))
    assert out.dtype == torch.float16  # so the fp16 tests below exercise half precision, not fp32 in disguise


def _finite_history(result) -> None:
    # the scalers start at 2**16 and halve on overflow: an R1 step may be skipped while they settle, never more
    assert result.history and result.nonfinite_steps <= 1
    assert all(math.isfinite(v) for v in result.final_losses.values())
    for entry in result.history:
        for key, value in entry.items():
            if isinstance(value, float) and key != "steps_per_s":
                assert math.isfinite(value), f"{key} at step {entry['step']} is {value}"


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_fp16_steps_of_every_generator_are_finite(name, tmp_path):
    model = build_tiny(GENERATORS[name])
    result = fit(model, batch_fn, train=FP16, out_dir=tmp_path, seed=0, stage_steps=stage_steps(model, 2))
    _finite_history(result)
    trained = {n for s in model.stages() for n in s.networks}
    assert set(result.skipped_updates) == trained  # one scaler per trained network, each counted


def test_fp16_steps_of_the_segmenter_are_finite(tmp_path):
    cfg = SegmentationConfig(channels=(4, 8, 8, 8, 8), strides=(2, 2, 2, 1), steps=3)

    def seg_batch(step, rng):
        batch = batch_fn(step, rng)
        return {"image": batch["image"], "label": (batch["label"] > 1).long()}

    torch.manual_seed(0)
    result = fit(Segmenter(cfg), seg_batch, train=FP16, out_dir=tmp_path, seed=0)
    _finite_history(result)
    assert result.steps == 3 and set(result.skipped_updates) == {"unet"}


def test_fp16_scaler_state_is_checkpointed_and_resumed_bit_identically(tmp_path):
    straight, resumed = check_resume_is_bit_identical(GENERATORS["spade_gan"], tmp_path, precision="fp16")
    assert resumed.skipped_updates == straight.skipped_updates
    states = [torch.load(r.checkpoint / "state.pt", weights_only=True) for r in (straight, resumed)]
    assert set(states[0]["scalers"]) == set(straight.skipped_updates)  # one scaler per trained network
    assert states[0]["scalers"] == states[1]["scalers"]
    # a fresh scaler would have counted 1 step since its last change after the resume
    assert max(s["_growth_tracker"] for s in states[0]["scalers"].values()) > 1
    for net, weights in states[0]["networks"].items():
        for name, tensor in weights.items():
            assert torch.equal(tensor, states[1]["networks"][net][name]), f"{net}.{name}"


def _toy_discriminator() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.LeakyReLU(0.2), torch.nn.Conv3d(4, 1, 3))


def _grads(net: torch.nn.Module) -> list[torch.Tensor]:
    # the last layer's bias does not reach an input gradient: it gets no gradient from the penalty
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in net.parameters()]


def _r1(grad: torch.Tensor) -> torch.Tensor:
    return grad.pow(2).flatten(1).sum(1).mean()


@pytest.mark.parametrize("output_scale", [1.0, 1e-7])
def test_r1_under_the_grad_scaler_equals_the_fp32_penalty(output_scale):
    disc = _toy_discriminator()
    x = torch.rand(2, 1, 10, 10, 6).requires_grad_(True)
    reference = _r1(penalty_grad(None, disc(x) * output_scale, x))
    reference.backward()
    wanted = _grads(disc)
    scaler, opt = torch.amp.GradScaler("cpu"), torch.optim.SGD(disc.parameters(), lr=0.0)
    for _ in range(20):  # as in training: an overflow skips the update and halves the scale, until one fits
        disc.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            out = disc(x) * output_scale
            penalty = _r1(penalty_grad(scaler, out, x))
            plain = _r1(torch.autograd.grad(out.sum(), x, create_graph=True)[0])
        scale = scaler.get_scale()
        scaler.scale(penalty).backward()
        scaler.step(opt)  # unscales the gradients in place
        scaler.update()
        if scaler.get_scale() == scale:
            break
    assert scaler.get_scale() < 2.0**16  # the first scale overflowed and was skipped
    assert penalty.item() == pytest.approx(reference.item(), rel=1e-2)
    if output_scale < 1:  # gradients below fp16's range: unscaled they vanish, the recipe keeps them
        assert plain.item() == 0.0
        return
    for got, want in zip(_grads(disc), wanted, strict=True):
        torch.testing.assert_close(got, want, rtol=2e-2, atol=1e-3 * float(want.abs().max()))


def test_r1_overflow_at_the_initial_scale_is_non_finite():
    # 2**16 per logit does not fit in fp16: the penalty is non-finite, so the step is skipped and the scale halved
    disc, x = _toy_discriminator(), torch.rand(2, 1, 10, 10, 6).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.float16):
        penalty = _r1(penalty_grad(torch.amp.GradScaler("cpu"), disc(x), x))
    assert not torch.isfinite(penalty)


class Toy:
    """One small regressor, one stage; its loss is NaN at the steps in ``nan_at``."""

    def __init__(self, steps: int, nan_at: tuple[int, ...] | range = ()):
        torch.manual_seed(0)
        self.networks = {"a": torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))}
        self.steps, self.nan_at = steps, nan_at

    def stages(self):
        return [Stage("first", ("a",), self.steps)]

    def make_optimizer(self, name, params, total_steps):
        return torch.optim.Adam(params, lr=0.05), None

    def train_step(self, ctx, stage, batch):
        loss = torch.nn.functional.mse_loss(ctx.module("a")(batch["x"]), batch["y"])
        if ctx.step in self.nan_at:
            loss = loss * float("nan")
        ctx.backward("a", loss)
        ctx.optimizer_step("a")
        return {"mse": loss}

    def state_extra(self):
        return {}

    def load_state_extra(self, state):
        pass


def toy_batch_fn(step: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    x = torch.from_numpy(rng.standard_normal((4, 3)).astype(np.float32))
    return {"x": x, "y": x.sum(dim=1, keepdim=True).tanh()}


@pytest.mark.parametrize("engine,zero", [("torch", None), ("deepspeed", 0), ("deepspeed", 2)])
def test_fp16_skips_and_counts_a_non_finite_step(tmp_path, engine, zero):
    train = TrainConfig(engine=engine, zero_stage=zero, precision="fp16", batch_size=4, log_every=1,
                        checkpoint_every=0, prefetch=0)  # fmt: skip
    model = Toy(steps=5, nan_at=(2,))
    result = fit(model, toy_batch_fn, train=train, out_dir=tmp_path, seed=0)
    assert result.steps == 5 and result.nonfinite_steps == 1
    assert result.skipped_updates["a"] >= 1  # the NaN gradients: the scaler left the weights alone
    assert all(torch.isfinite(p).all() for p in model.networks["a"].parameters())
    assert [h["step"] for h in result.history] == [1, 2, 4, 5]  # step 3 is left out of the logged means
    assert all(np.isfinite(h["mse"]) for h in result.history)
    with pytest.raises(TrainingError, match=r"stage 'first' step 2: loss 'mse' is nan"):  # fp32: the run stops
        fit(Toy(steps=5, nan_at=(2,)), toy_batch_fn, train=dataclasses.replace(train, precision="fp32"),
            out_dir=tmp_path / "fp32", seed=0)  # fmt: skip


def test_fp16_stops_when_losses_stay_non_finite(tmp_path):
    train = TrainConfig(engine="torch", precision="fp16", batch_size=4, log_every=1, checkpoint_every=0, prefetch=0)
    with pytest.raises(TrainingError, match=r"not finite for 25 steps in a row under fp16"):
        fit(Toy(steps=40, nan_at=range(40)), toy_batch_fn, train=train, out_dir=tmp_path, seed=0)


def test_bf16_is_refused_on_a_gpu_without_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "Tesla V100-SXM2-32GB")
    with pytest.raises(ConfigError) as err:
        check_precision("bf16", torch.device("cuda", 0))
    message = str(err.value)
    assert "\n" not in message and "Tesla V100-SXM2-32GB (sm_70)" in message and "train.precision=fp16" in message
    check_precision("fp16", torch.device("cuda", 0))
    check_precision("bf16", torch.device("cpu"))
    assert SHAPE  # the contract's shape is the one the generator tests above train at
