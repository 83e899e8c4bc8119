"""The training engine: NaN guard, checkpoints (atomic, validated), resume, frozen stages, DeepSpeed path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import TrainConfig
from benchmark.engine.contract import Stage
from benchmark.engine.loop import fit
from benchmark.errors import CheckpointError, ConfigError, TrainingError
from benchmark.tracking.tracker import MemoryTracker

TORCH = TrainConfig(engine="torch", batch_size=4, log_every=1, checkpoint_every=2, keep_checkpoints=0)


class Toy:
    """Two small regressors trained in two stages; the loss can be made NaN at one step."""

    def __init__(self, width: int = 4, nan_at: int | None = None, steps: tuple[int, int] = (3, 2)):
        torch.manual_seed(0)
        self.networks = {
            "a": nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 1)),
            "b": nn.Sequential(nn.Linear(3, 1)),
        }
        self.nan_at, self.steps = nan_at, steps
        self.calls = 0
        self.seen: list[tuple[str, bool, bool]] = []  # (stage, a.requires_grad, a.training)

    def stages(self) -> list[Stage]:
        return [Stage("first", ("a",), self.steps[0]), Stage("second", ("b",), self.steps[1])]

    def make_optimizer(self, name, params, total_steps):
        opt = torch.optim.Adam(params, lr=0.05)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    def train_step(self, ctx, stage, batch):
        a = self.networks["a"]
        self.seen.append((stage.name, next(a.parameters()).requires_grad, a.training))
        name = stage.networks[0]
        pred = ctx.module(name)(batch["x"])
        # the context's generator feeds noise into the loss, so resume must restore it exactly
        loss = F.mse_loss(pred, batch["y"]) + 1e-3 * torch.randn((), generator=ctx.generator, device=ctx.device)
        if self.nan_at is not None and ctx.step == self.nan_at and stage.name == "first":
            loss = loss * float("nan")
        ctx.backward(name, loss)
        ctx.optimizer_step(name)
        self.calls += 1
        return {"mse": loss}

    def state_extra(self):
        return {"calls": self.calls}

    def load_state_extra(self, state):
        self.calls = int(state["calls"])


def batch_fn(step: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    x = torch.from_numpy(rng.standard_normal((4, 3)).astype(np.float32))
    return {"x": x, "y": x.sum(dim=1, keepdim=True).tanh()}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_nan_loss_names_stage_step_and_loss(tmp_path):
    with pytest.raises(TrainingError, match=r"stage 'first' step 2: loss 'mse' is nan"):
        fit(Toy(nan_at=2), batch_fn, train=TORCH, out_dir=tmp_path, seed=0)


def test_history_tracker_and_frozen_stage(tmp_path):
    model = Toy()
    tracker = MemoryTracker()
    result = fit(model, batch_fn, train=TORCH, out_dir=tmp_path, seed=0, tracker=tracker)
    assert result.steps == 5 and len(result.timings) == 5
    assert [(h["stage"], h["step"], h["global_step"]) for h in result.history] == [
        ("first", 1, 1), ("first", 2, 2), ("first", 3, 3), ("second", 1, 4), ("second", 2, 5),
    ]  # fmt: skip
    assert ("first/mse", result.history[0]["mse"], 1) in tracker.metrics
    assert any(name == "second/steps_per_s" for name, _, _ in tracker.metrics)
    # network "a" trains in stage one and is frozen (no grad, eval mode) in stage two
    assert model.seen[0] == ("first", True, True)
    assert model.seen[-1] == ("second", False, False)
    assert all(t.data_s >= 0 and t.compute_s > 0 for t in result.timings)


def test_frozen_network_is_unchanged_in_later_stage(tmp_path):
    model = Toy(steps=(1, 3))
    fit(model, batch_fn, train=TORCH, out_dir=tmp_path / "x", seed=0, stage_steps={"second": 0})
    after_first = [p.detach().clone() for p in model.networks["a"].parameters()]
    model2 = Toy(steps=(1, 3))
    fit(model2, batch_fn, train=TORCH, out_dir=tmp_path / "y", seed=0)
    for p, q in zip(after_first, model2.networks["a"].parameters(), strict=True):
        assert torch.equal(p, q)


def test_resume_matches_uninterrupted_run(tmp_path):
    straight = fit(Toy(), batch_fn, train=TORCH, out_dir=tmp_path / "a", seed=1)
    first = fit(Toy(), batch_fn, train=TORCH, out_dir=tmp_path / "b", seed=1, stage_steps={"first": 3, "second": 1})
    model = Toy()
    resumed = fit(model, batch_fn, train=TORCH, out_dir=tmp_path / "b", seed=1)
    assert resumed.resumed_from == first.checkpoint
    assert len(resumed.timings) == 1
    assert resumed.final_losses == straight.final_losses
    assert model.calls == 5  # state_extra came back from the checkpoint
    # a finished run resumes to "nothing left to do" and reports the stored losses
    again = fit(Toy(), batch_fn, train=TORCH, out_dir=tmp_path / "b", seed=1)
    assert again.timings == [] and again.final_losses == straight.final_losses and again.steps == 5


def test_corrupt_checkpoint_is_refused_and_untouched(tmp_path):
    fit(Toy(), batch_fn, train=TORCH, out_dir=tmp_path, seed=0, stage_steps={"first": 2, "second": 0})
    state = tmp_path / "checkpoints" / "ckpt-000000002" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])  # truncated, as after a crash mid-copy
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=r"ckpt-000000002/state.pt: cannot be read"):
        fit(Toy(), batch_fn, train=TORCH, out_dir=tmp_path, seed=0)
    assert _snapshot(tmp_path) == before


def test_foreign_checkpoint_is_refused(tmp_path):
    folder = tmp_path / "checkpoints" / "ckpt-000000004"
    folder.mkdir(parents=True)
    torch.save({"model": {}}, folder / "state.pt")
    with pytest.raises(CheckpointError, match="state.pt: is not a lge-synthbench-checkpoint file"):
        fit(Toy(), batch_fn, train=TORCH, out_dir=tmp_path, seed=0)


def test_mismatched_checkpoint_is_refused_and_untouched(tmp_path):
    fit(Toy(width=4), batch_fn, train=TORCH, out_dir=tmp_path, seed=0, stage_steps={"first": 2, "second": 0})
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=r"different model \(checkpoint has a/0.bias:\(4,\)"):
        fit(Toy(width=8), batch_fn, train=TORCH, out_dir=tmp_path, seed=0)
    assert _snapshot(tmp_path) == before


def test_a_checkpoint_of_another_world_size_is_refused_and_untouched(tmp_path):
    fit(Toy(), batch_fn, train=TORCH, out_dir=tmp_path, seed=0, stage_steps={"first": 2, "second": 0})
    state_file = tmp_path / "checkpoints" / "ckpt-000000002" / "state.pt"
    state = torch.load(state_file, weights_only=False)
    torch.save({**state, "world_size": 2}, state_file)  # as written by a 2-rank job
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=r"state.pt: was written by a 2-rank job and this one has 1 rank"):
        fit(Toy(), batch_fn, train=TORCH, out_dir=tmp_path, seed=0)
    assert _snapshot(tmp_path) == before


def test_leftover_tmp_checkpoint_is_ignored(tmp_path):
    first = fit(Toy(), batch_fn, train=TORCH, out_dir=tmp_path, seed=0, stage_steps={"first": 2, "second": 0})
    leftover = tmp_path / "checkpoints" / "ckpt-000000099.tmp"
    leftover.mkdir()
    (leftover / "state.pt").write_bytes(b"half written")
    result = fit(Toy(), batch_fn, train=TORCH, out_dir=tmp_path, seed=0)
    assert result.resumed_from == first.checkpoint
    assert result.steps == 5
    assert not list((tmp_path / "checkpoints").glob("ckpt-00000000[0-9].tmp"))  # our own writes left no temp


def test_keep_checkpoints_prunes_old_ones(tmp_path):
    train = TrainConfig(engine="torch", batch_size=4, log_every=10, checkpoint_every=1, keep_checkpoints=2)
    fit(Toy(), batch_fn, train=train, out_dir=tmp_path, seed=0)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["ckpt-000000004", "ckpt-000000005"]


def test_unknown_stage_in_stage_steps(tmp_path):
    with pytest.raises(ConfigError, match="stage_steps.third: unknown stage; stages of this model: first, second"):
        fit(Toy(), batch_fn, train=TORCH, out_dir=tmp_path, seed=0, stage_steps={"third": 1})


def test_deepspeed_engine_matches_torch_and_resumes(tmp_path):
    """One process on the CPU: ZeRO-0 fp32 follows the torch path; a DeepSpeed checkpoint resumes exactly."""
    ds = TrainConfig(engine="deepspeed", zero_stage=0, batch_size=4, log_every=1, checkpoint_every=2)
    reference = fit(Toy(), batch_fn, train=TORCH, out_dir=tmp_path / "torch", seed=0)
    straight = fit(Toy(), batch_fn, train=ds, out_dir=tmp_path / "ds", seed=0)
    assert straight.steps == 5
    for h_ref, h_ds in zip(reference.history, straight.history, strict=True):
        assert h_ds["mse"] == pytest.approx(h_ref["mse"], rel=1e-5, abs=1e-7)
    assert (tmp_path / "ds" / "checkpoints" / "ckpt-000000005" / "b").is_dir()  # DeepSpeed's own files

    ds2 = TrainConfig(engine="deepspeed", zero_stage=2, batch_size=4, log_every=1, checkpoint_every=2)
    fit(Toy(), batch_fn, train=ds2, out_dir=tmp_path / "z2", seed=0, stage_steps={"second": 1})
    resumed = fit(Toy(), batch_fn, train=ds2, out_dir=tmp_path / "z2", seed=0)
    assert len(resumed.timings) == 1
    assert resumed.final_losses["mse"] == pytest.approx(reference.final_losses["mse"], rel=1e-5, abs=1e-7)
    with pytest.raises(CheckpointError, match="written by train.engine=deepspeed, not torch"):
        fit(Toy(), batch_fn, train=TORCH, out_dir=tmp_path / "z2", seed=0)


def test_deepspeed_config_errors(tmp_path):
    from benchmark.engine.backends import deepspeed_config

    cfg = deepspeed_config(TrainConfig(engine="deepspeed", precision="bf16", batch_size=3), world=2)
    assert cfg["zero_optimization"]["stage"] == 2  # from configs/deepspeed/zero2_cpu.json
    assert cfg["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"} and "bf16" not in cfg
    assert (cfg["train_micro_batch_size_per_gpu"], cfg["train_batch_size"]) == (3, 6)
    with pytest.raises(ConfigError, match="train.zero_stage: 3 is not supported"):
        deepspeed_config(TrainConfig(engine="deepspeed", zero_stage=3), world=1)
    with pytest.raises(ConfigError, match="train.deepspeed_config: nope.json: file not found"):
        deepspeed_config(TrainConfig(engine="deepspeed", deepspeed_config="nope.json"), world=1)
    bad = tmp_path / "opt.json"
    bad.write_text('{"optimizer": {"type": "Adam"}}')
    with pytest.raises(ConfigError, match="remove the 'optimizer' section"):
        deepspeed_config(TrainConfig(engine="deepspeed", deepspeed_config=str(bad)), world=1)


def test_deepspeed_gan_in_bf16_matches_torch(tmp_path):
    """G's loss back-propagates through a frozen D: DeepSpeed must not demand D's engine.backward for it."""
    from benchmark.generators import GENERATORS
    from benchmark.generators.train import train_generator

    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 4, (32, 32, 16)).astype(np.uint8) for _ in range(2)]
    images = [lab.astype(np.float32) / 3 for lab in labels]
    losses = {}
    for engine in ("torch", "deepspeed"):
        train = TrainConfig(engine=engine, zero_stage=0, precision="bf16", batch_size=2, log_every=1)
        model, result = train_generator(
            "pix2pix3d", GENERATORS["pix2pix3d"].config_cls.tiny(), images, labels, num_classes=4, train=train,
            out_dir=tmp_path / engine, seed=0, steps=2,
        )  # fmt: skip
        losses[engine] = [h["g"] for h in result.history]
        assert all(p.dtype == torch.float32 for p in model.networks["generator"].parameters())
    assert losses["deepspeed"] == pytest.approx(losses["torch"], rel=1e-4)


def test_prefetched_batches_change_nothing_but_the_wait(tmp_path):
    import os
    import time

    build_s, marks = 0.1, tmp_path / "built"
    marks.mkdir()

    def slow_batch_fn(step, rng):
        time.sleep(build_s)
        batch = batch_fn(step, rng)
        batch["pid"] = torch.tensor([os.getpid(), step])  # which process built which step
        (marks / f"{os.getpid()}-{step}").touch()
        return batch

    class SlowToy(Toy):
        def __init__(self, prefetch, **kw):
            super().__init__(**kw)
            self.prefetch, self.built = prefetch, []

        def train_step(self, ctx, stage, batch):
            pid, step = batch["pid"].tolist()
            self.built.append((pid, step))
            last = (self.steps[0] if stage.name == "first" else self.steps[1]) - 1
            if self.prefetch and step < last:
                # the next batch is built while this step runs: wait for its mark (no timing involved); a loader
                # that built batches only when asked would never make it, and the step would fail here
                deadline = time.monotonic() + 60
                while not (marks / f"{pid}-{step + 1}").exists():
                    assert time.monotonic() < deadline, f"batch {step + 1} was not built during step {step}"
                    time.sleep(0.005)
            return super().train_step(ctx, stage, batch)

    runs, toys = {}, {}
    for depth in (0, 2):
        train = TrainConfig(
            engine="torch", batch_size=4, log_every=1, checkpoint_every=0, prefetch=depth, loader_workers=1
        )
        toys[depth] = SlowToy(prefetch=depth, steps=(6, 4))
        runs[depth] = fit(toys[depth], slow_batch_fn, train=train, out_dir=tmp_path / str(depth), seed=0)
    assert [h["mse"] for h in runs[0].history] == [h["mse"] for h in runs[2].history]
    # every step got its own batch, in order; prefetched ones come from a loader process (one per stage)
    assert [s for _, s in toys[0].built] == [s for _, s in toys[2].built] == [*range(6), *range(4)]
    assert {p for p, _ in toys[0].built} == {os.getpid()}
    loaders = [{p for p, _ in toys[2].built[:6]}, {p for p, _ in toys[2].built[6:]}]
    assert all(len(p) == 1 and os.getpid() not in p for p in loaders)
    # the engine's data timer: building in the step waits at least build_s (a sleep); after each stage's first step
    # a prefetched batch was already built (see the marks), so the wait is a queue read, far below build_s
    wait = {d: float(np.median([t.data_s for t in r.timings if t.step > 0])) for d, r in runs.items()}
    assert wait[0] >= build_s and wait[2] < build_s, wait


def test_prefetched_batch_error_is_raised_as_the_original(tmp_path):
    from benchmark.errors import DataError

    def failing(step, rng):
        if step == 3:
            raise DataError("case_7.nii.gz", "corrupt gzip stream")
        return batch_fn(step, rng)

    train = TrainConfig(engine="torch", batch_size=4, log_every=1, checkpoint_every=0, prefetch=2)
    toy = Toy(steps=(6, 2))
    with pytest.raises(DataError, match="case_7.nii.gz: corrupt gzip stream"):
        fit(toy, failing, train=train, out_dir=tmp_path, seed=0)
    assert toy.calls == 3  # steps 0-2 trained, nothing after the failing batch


def test_prune_keeps_the_final_checkpoint_that_rebuilds_the_trained_model(tmp_path):
    from benchmark.engine.checkpoint import prune

    train = TrainConfig(engine="torch", batch_size=4, log_every=1, checkpoint_every=1, keep_checkpoints=0)
    model = Toy()
    trained = fit(model, batch_fn, train=train, out_dir=tmp_path, seed=0)
    root = tmp_path / "checkpoints"
    (root / "ckpt-000000003.tmp").mkdir()  # an interrupted write
    removed = prune(root)
    assert [p.name for p in removed] == ["ckpt-000000003.tmp", *(f"ckpt-00000000{s}" for s in range(1, 5))]
    assert sorted(p.name for p in root.iterdir()) == ["ckpt-000000005"]
    # what a later job does to draw samples again: fit on the same folder trains nothing and restores the weights
    again_model = Toy()
    again = fit(again_model, batch_fn, train=train, out_dir=tmp_path, seed=0)
    assert again.timings == [] and again.steps == 5 and again.final_losses == trained.final_losses
    for name, net in model.networks.items():
        for p, q in zip(net.parameters(), again_model.networks[name].parameters(), strict=True):
            assert torch.equal(p, q)
    assert prune(root) == [] and prune(tmp_path / "missing") == []


def test_prune_keep_two_and_refusals(tmp_path):
    from benchmark.engine.checkpoint import prune

    train = TrainConfig(engine="torch", batch_size=4, log_every=1, checkpoint_every=1, keep_checkpoints=0)
    fit(Toy(), batch_fn, train=train, out_dir=tmp_path, seed=0)
    root = tmp_path / "checkpoints"
    with pytest.raises(ConfigError, match="keep=0 must be >= 1"):
        prune(root, keep=0)
    assert [p.name for p in prune(root, keep=2)] == ["ckpt-000000001", "ckpt-000000002", "ckpt-000000003"]
    state = root / "ckpt-000000005" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"ckpt-000000005/state.pt: cannot be read"):
        prune(root)
    assert sorted(p.name for p in root.iterdir()) == ["ckpt-000000004", "ckpt-000000005"]  # nothing removed
