"""Seeds and batches for the training loop (``benchmark.engine``).

``seed_everything`` seeds the global RNGs once per run; ``derive_seed`` gives the per-step seeds. ``Batches``
hands ``fit`` the batches of one stage, built ahead by ``train.loader_workers`` forked torch ``DataLoader`` worker
processes when ``train.prefetch`` > 0 (on Linux) or inside each step otherwise; ``resolve_loader_workers`` turns the
setting (``auto``: the job's CPUs minus one) into a number.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmark.errors import ConfigError, TrainingError

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


def job_cpus() -> int:
    """The CPUs this job may use: its affinity mask, capped by ``SLURM_CPUS_PER_TASK`` where Slurm sets it.

    Without task binding a Slurm job's affinity can be the whole node, so the allocation's count is the better bound.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm:
        if not slurm.isdigit() or int(slurm) < 1:
            raise ConfigError(f"train.loader_workers: auto reads SLURM_CPUS_PER_TASK={slurm!r}, not a CPU count >= 1")
        cpus = min(cpus, int(slurm))
    return cpus


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread inside the block, as in a loader worker (torch's DataLoader sets one per worker)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ``auto``'s ceiling: every worker is a fork of the training process holding ``train.prefetch`` batches, and a
# workstation's pool of jobs each seeing every core would otherwise fork dozens per stage
AUTO_MAX_WORKERS = 8


def resolve_loader_workers(setting: int | str | None, cpus: int | None = None) -> int:
    """The number of loader worker processes for ``train.loader_workers``.

    Args:
        setting: an integer >= 0 (0 = build each batch in the training process), or ``"auto"`` / None: this rank's
            share of the job's CPUs (ranks started on one node by torchrun share its mask: ``LOCAL_WORLD_SIZE``)
            minus the one its training process uses, at least 1 and at most ``AUTO_MAX_WORKERS``.
        cpus: the job's CPUs for ``auto`` (default ``job_cpus()``; the cost plan passes ``cluster.cpus_per_task``).
    """
    if setting is None or setting == "auto":
        share = (job_cpus() if cpus is None else cpus) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
        return max(1, min(AUTO_MAX_WORKERS, share - 1))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
        raise ConfigError(f"train.loader_workers: {setting!r} must be an integer >= 0 or auto")
    return setting


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

    def make_here(self, step: int) -> dict[str, torch.Tensor]:
        """``make`` in the training process, on one torch thread like a loader worker: a multi-threaded reduction
        (MONAI's smoothing, resampling) may round differently, and the batch must not depend on the worker count."""
        with one_torch_thread():
            return self.make(step)

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
    """The batches of one stage, built ahead by ``workers`` torch ``DataLoader`` worker processes, ``depth`` each.

    The workers take the steps round-robin and the loader hands the batches back in step order. A batch depends
    only on its step (``batch_fn`` must draw randomness from the ``rng`` it is given only, never
    from the global RNGs), so building it early changes nothing but the time the training step waits for it
    (``StepTiming.data_s``). A separate process, not a thread, keeps the batch function's Python
    work (MONAI augmentations) from competing with the training step for the GIL. ``depth=0``, ``workers=0``, or
    a platform without fork, builds each batch inside its step, in this process. Whatever the number of workers,
    and after a resume at any step, step ``k`` gets the same batch: its RNGs are seeded from the step alone.

    Args:
        batch_fn: ``batch_fn(step, rng)``.
        key: (seed, rank, stage index): with the step, the seed of each batch.
        steps: the stage's steps; first: the first step to build (a resumed stage starts later).
        depth: batches built ahead per worker (``train.prefetch``).
        pin: hand the batches over in pinned memory (training on a GPU).
        workers: ``train.loader_workers`` (an integer or ``auto``, see ``resolve_loader_workers``).
    """

    def __init__(
        self, batch_fn: BatchFn, key: tuple[int, int, int], steps: int, depth: int, first: int, pin: bool,
        workers: int | str | None = 1,
    ):  # fmt: skip
        self.source = _StepBatches(batch_fn, key, steps)
        self.iterator = None
        self.workers = resolve_loader_workers(workers) if depth > 0 and first < steps and _FORK is not None else 0
        if self.workers > 0:
            loader = torch.utils.data.DataLoader(
                self.source, batch_size=None, sampler=range(first, steps), num_workers=self.workers,
                prefetch_factor=depth, pin_memory=pin, multiprocessing_context=_FORK,
                # the worker's base seed comes from this generator, not from the training process's global RNG,
                # whose state (dropout masks, checkpointed) must not depend on when a loader was started
                generator=torch.Generator().manual_seed(0), worker_init_fn=_quiet_loader_signals,
                collate_fn=_as_built, timeout=_LOADER_TIMEOUT_S,
            )  # fmt: skip
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _JOB_SIGNALS)  # held while the workers are forked
            try:
                self.iterator = iter(loader)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def get(self, step: int) -> dict[str, torch.Tensor]:
        if self.iterator is None:
            return self.source.make_here(step)
        batch = next(self.iterator)
        if isinstance(batch, _Failed):
            self.source.make_here(step)  # raises the original error here, if it is reproducible
            raise TrainingError(f"the batch of step {step} failed in the loader process: {batch.error}")
        return batch

    def __enter__(self) -> Batches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.iterator = None  # shuts the worker processes down
