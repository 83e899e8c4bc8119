"""Checkpoint at the preemption signal: the engine finishes the step, checkpoints, then runs the job's handler."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from test_engine import Toy, batch_fn

from benchmark.config import TrainConfig
from benchmark.engine.loop import fit
from benchmark.engine.preemption import PreemptionHook, job_signal
from benchmark.errors import ConfigError

# no periodic checkpoint before the end of a stage: any other checkpoint was written at the signal
TRAIN = TrainConfig(engine="torch", batch_size=4, log_every=3, checkpoint_every=100, keep_checkpoints=0)


class Requeued(Exception):
    """What the stand-in for submitit's handler raises (submitit's exits the process)."""


class SignalledToy(Toy):
    """Sends this process the signal in the middle of ``signal_at`` = (stage, step), before the backward pass."""

    def __init__(self, signal_at: tuple[str, int] | None, sig: int = signal.SIGUSR2, **kw):
        super().__init__(**kw)
        self.signal_at, self.sig, self.finished_steps = signal_at, sig, 0

    def train_step(self, ctx, stage, batch):
        if (stage.name, ctx.step) == self.signal_at:
            os.kill(os.getpid(), self.sig)  # the handler runs here, in the middle of the step
        losses = super().train_step(ctx, stage, batch)
        self.finished_steps += 1
        return losses


@pytest.fixture
def previous_handler(tmp_path):
    """A stand-in for submitit's handler: records the checkpoints on disk when it is called, then ``Requeued``."""
    calls: list[tuple[int, list[str]]] = []
    mode = {"raise": True}

    def handler(signum, frame):
        root = tmp_path / "run" / "checkpoints"
        calls.append((signum, sorted(p.name for p in root.iterdir()) if root.is_dir() else []))
        if mode["raise"]:
            raise Requeued

    old = signal.signal(signal.SIGUSR2, handler)
    yield handler, calls, mode
    signal.signal(signal.SIGUSR2, old)


def _curve(result):
    return [{k: v for k, v in h.items() if k != "steps_per_s"} for h in result.history]


def test_signal_checkpoints_the_step_in_progress_then_calls_the_handler(tmp_path, previous_handler):
    handler, calls, _ = previous_handler
    model = SignalledToy(("first", 3), steps=(6, 2))
    with pytest.raises(Requeued):
        fit(model, batch_fn, train=TRAIN, out_dir=tmp_path / "run", seed=3)
    # step 3 (the 4th) was finished, checkpointed as 4 steps done, and only then was the handler called; nothing
    # was trained after it
    assert model.finished_steps == 4
    assert calls == [(signal.SIGUSR2, ["ckpt-000000004"])]
    assert signal.getsignal(signal.SIGUSR2) is handler  # fit put the previous handler back

    resumed = fit(Toy(steps=(6, 2)), batch_fn, train=TRAIN, out_dir=tmp_path / "run", seed=3)
    assert resumed.resumed_from == tmp_path / "run" / "checkpoints" / "ckpt-000000004"
    assert [(t.stage, t.step) for t in resumed.timings] == [("first", s) for s in range(4, 6)] + [
        ("second", 0),
        ("second", 1),
    ]
    straight = fit(Toy(steps=(6, 2)), batch_fn, train=TRAIN, out_dir=tmp_path / "straight", seed=3)
    assert resumed.final_losses == straight.final_losses
    # the log interval 4-6 straddles the cut: its mean still covers steps 4, 5 and 6
    assert _curve(resumed) == _curve(straight)
    assert len(calls) == 1


def test_handler_that_returns_lets_training_go_on_unchanged(tmp_path, previous_handler):
    _, calls, mode = previous_handler
    mode["raise"] = False  # like submitit's handler on a rank other than 0
    model = SignalledToy(("second", 0), steps=(3, 3))
    result = fit(model, batch_fn, train=TRAIN, out_dir=tmp_path / "run", seed=0)
    assert calls == [(signal.SIGUSR2, ["ckpt-000000003", "ckpt-000000004"])]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "ckpt-000000003",
        "ckpt-000000004",
        "ckpt-000000006",
    ]
    straight = fit(Toy(steps=(3, 3)), batch_fn, train=TRAIN, out_dir=tmp_path / "straight", seed=0)
    assert result.final_losses == straight.final_losses and _curve(result) == _curve(straight)


def test_signal_at_the_last_step_writes_one_checkpoint(tmp_path, previous_handler):
    _, calls, _ = previous_handler
    with pytest.raises(Requeued):
        fit(SignalledToy(("second", 1), steps=(2, 2)), batch_fn, train=TRAIN, out_dir=tmp_path / "run", seed=0)
    assert calls == [(signal.SIGUSR2, ["ckpt-000000002", "ckpt-000000004"])]


def test_signal_with_nothing_left_to_train_is_handed_over_when_fit_returns(tmp_path, previous_handler):
    _, calls, _ = previous_handler
    fit(Toy(steps=(2, 1)), batch_fn, train=TRAIN, out_dir=tmp_path / "run", seed=0)

    class LoadSignalled(Toy):
        def load_state_extra(self, state):
            os.kill(os.getpid(), signal.SIGUSR2)  # arrives during resume, before any step could see it
            super().load_state_extra(state)

    with pytest.raises(Requeued):
        fit(LoadSignalled(steps=(2, 1)), batch_fn, train=TRAIN, out_dir=tmp_path / "run", seed=0)
    assert calls == [(signal.SIGUSR2, ["ckpt-000000002", "ckpt-000000003"])]


def test_ignored_signal_changes_nothing(tmp_path):
    old = signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # no job handler: fit must not install one
    try:
        result = fit(SignalledToy(("first", 1), steps=(3, 1)), batch_fn, train=TRAIN, out_dir=tmp_path, seed=0)
        assert signal.getsignal(signal.SIGUSR2) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert result.steps == 4
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["ckpt-000000003", "ckpt-000000004"]


def test_hook_leaves_a_default_action_alone():
    old = signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    try:
        with PreemptionHook() as hook:
            assert not hook.installed and signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR2, old)


def test_signal_name_comes_from_submitit_variable():
    assert job_signal({}) is signal.SIGUSR2
    assert job_signal({"SUBMITIT_PREEMPT_SIGNAL": "USR1"}) is signal.SIGUSR1
    with pytest.raises(ConfigError, match="SUBMITIT_PREEMPT_SIGNAL: 'NOPE' is not a signal name"):
        job_signal({"SUBMITIT_PREEMPT_SIGNAL": "NOPE"})


def test_other_signal_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    seen: list[int] = []

    def handler(signum, frame):
        seen.append(signum)
        raise Requeued

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        with pytest.raises(Requeued):
            fit(SignalledToy(("first", 0), sig=signal.SIGUSR1), batch_fn, train=TRAIN, out_dir=tmp_path, seed=0)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert seen == [signal.SIGUSR1]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["ckpt-000000001"]
    assert torch.load(tmp_path / "checkpoints" / "ckpt-000000001" / "state.pt", weights_only=True)["step"] == 1


def test_signal_during_a_periodic_checkpoint_hands_over_after_it(tmp_path, previous_handler, monkeypatch):
    from benchmark.engine import checkpoint as ckpt

    _, calls, _ = previous_handler
    save = ckpt.save

    def signalled_save(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGUSR2)  # arrives while the periodic checkpoint is being written
        return save(*args, **kwargs)

    monkeypatch.setattr(ckpt, "save", signalled_save)
    model = SignalledToy(None, steps=(6, 2))
    train = TrainConfig(engine="torch", batch_size=4, log_every=3, checkpoint_every=2, keep_checkpoints=0)
    with pytest.raises(Requeued):
        fit(model, batch_fn, train=train, out_dir=tmp_path / "run", seed=0)
    assert model.finished_steps == 2  # that checkpoint is at the step boundary: no further step, no second write
    assert calls == [(signal.SIGUSR2, ["ckpt-000000002"])]
