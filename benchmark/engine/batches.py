"""Seeds and batches for the training loop (``benchmark.engine``).

``seed_everything`` seeds the global RNGs once per run; ``derive_seed`` gives the per-step seeds. ``Batches``
hands ``fit`` the batches of one stage, built ahead by a forked torch ``DataLoader`` worker when
``train.prefetch`` > 0 (on Linux) or inside each step otherwise.
"""

from __future__ import annotations

import multiprocessing
import random
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmark.errors import TrainingError

BatchFn = Callable[[int, np.random.Generator], dict[str, torch.Tensor]]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence), e.g. (seed, rank, stage index, step, stream)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed python, numpy and torch (all devices) for ``(seed, rank)``.

    Args:
        seed: the run's seed.
        rank: global rank; ranks get distinct streams.
    """
    value = derive_seed(seed, rank)
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)


# the loader process is forked, so batch functions may be closures (a spawned one would need them picklable);
# where fork is not available or not safe (macOS, Windows) batches are built inside the step
_FORK = multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None


_JOB_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
_PR_SET_PDEATHSIG = 1  # <sys/prctl.h>


def _quiet_loader_signals(worker_id: int) -> None:
    """In the loader process: ignore the signals a scheduler sends the whole job for preemption and time-outs.

    Slurm signals every process of a job (SIGTERM, then submitit's USR2); the forked loader would otherwise die
    (and the training step would fail on a lost worker) or run the inherited submitit handler, which checkpoints
    and requeues, from the wrong process. The training process handles them and the loader dies with it (the
    kernel sends it SIGKILL when its parent exits). The signals were blocked across the fork (``Batches``), so
    none can reach the inherited handler before this runs.
    """
    import ctypes

    for sig in _JOB_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _JOB_SIGNALS)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


class _StepBatches(torch.utils.data.Dataset):
    """Step ``k`` of a stage -> ``batch_fn(k, rng_k)``, ``rng_k`` seeded from (seed, rank, stage index, k).

    In a loader worker a failing ``batch_fn`` returns a ``_Failed`` marker instead of raising, so that the
    training process can rebuild that batch itself and raise the original error (with its type and its file
    name) rather than the loader's re-wrapped copy.
    """

    def __init__(self, batch_fn: BatchFn, key: tuple[int, int, int], steps: int):
        self.batch_fn, self.key, self.steps = batch_fn, key, steps

    def __len__(self) -> int:
        return self.steps

    def make(self, step: int) -> dict[str, torch.Tensor]:
        return self.batch_fn(step, np.random.default_rng([*self.key, step]))

    def __getitem__(self, step: int) -> Any:
        # in the loader process: its global RNGs re-seeded per step, so even a transform that ignored the rng
        # it is given would build the same batch after a resume as in an uninterrupted run
        seed_everything(derive_seed(*self.key, step, 2), 0)
        try:
            return self.make(step)
        except Exception as exc:  # noqa: BLE001 - re-raised in the training process by Batches.get
            return _Failed(f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class _Failed:
    error: str


_LOADER_TIMEOUT_S = 600.0  # a batch that takes longer means a hung loader process: fail instead of waiting


def _as_built(batch: Any) -> Any:
    """The loader's collate function: hand the batch over as ``batch_fn`` built it (no numpy -> tensor conversion)."""
    return batch


class Batches:
    """The batches of one stage, built ``depth`` steps ahead by a torch ``DataLoader`` worker process.

    A batch depends only on its step (``batch_fn`` must draw randomness from the ``rng`` it is given only, never
    from the global RNGs), so building it early changes nothing but the time the training step waits for it
    (``StepTiming.data_s``). A separate process, not a thread, keeps the batch function's Python
    work (MONAI augmentations) from competing with the training step for the GIL. ``depth=0``, or a platform
    without fork, builds each batch inside its step, in this process.
    """

    def __init__(self, batch_fn: BatchFn, key: tuple[int, int, int], steps: int, depth: int, first: int, pin: bool):
        self.source = _StepBatches(batch_fn, key, steps)
        self.iterator = None
        if depth > 0 and first < steps and _FORK is not None:
            loader = torch.utils.data.DataLoader(
                self.source, batch_size=None, sampler=range(first, steps), num_workers=1,
                prefetch_factor=depth, pin_memory=pin, multiprocessing_context=_FORK,
                # the worker's base seed comes from this generator, not from the training process's global RNG,
                # whose state (dropout masks, checkpointed) must not depend on when a loader was started
                generator=torch.Generator().manual_seed(0), worker_init_fn=_quiet_loader_signals,
                collate_fn=_as_built, timeout=_LOADER_TIMEOUT_S,
            )  # fmt: skip
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _JOB_SIGNALS)  # held while the worker is forked
            try:
                self.iterator = iter(loader)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def get(self, step: int) -> dict[str, torch.Tensor]:
        if self.iterator is None:
            return self.source.make(step)
        batch = next(self.iterator)
        if isinstance(batch, _Failed):
            self.source.make(step)  # raises the original error here, if it is reproducible
            raise TrainingError(f"the batch of step {step} failed in the loader process: {batch.error}")
        return batch

    def __enter__(self) -> Batches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.iterator = None  # shuts the worker process down
