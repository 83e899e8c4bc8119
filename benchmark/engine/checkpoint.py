"""Training checkpoints: one folder per checkpoint, written atomically, validated before anything is loaded.

Layout of ``<run>/checkpoints/ckpt-<global step, 9 digits>/``:

- ``state.pt``: format tag and version, engine kind, the model's layout (network/parameter names and shapes)
  and its fingerprint, stage index and step, loss history, ``model.state_extra()``; with the torch engine also
  every network, optimizer, scheduler and grad scaler state;
- ``rng-rank<r>.pt``: python, numpy and torch (CPU and CUDA) RNG states of rank ``r``;
- ``<network>/``: DeepSpeed's own checkpoint of each trained network (DeepSpeed engine only).

The folder is assembled as ``ckpt-<step>.tmp``, flushed to disk (fsync) and renamed when complete, so a killed job
or a crashed node leaves at most a ``.tmp`` folder, which resume ignores, and never touches earlier checkpoints.
Everything of ours is loaded with ``torch.load(weights_only=True)``. ``prune`` removes what a finished job no
longer needs (all but the newest checkpoint, and ``.tmp`` leftovers).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.engine import distributed
from benchmark.engine.contract import Trainable
from benchmark.errors import CheckpointError, ConfigError

FORMAT = "lge-synthbench-checkpoint"
VERSION = 1
_NAME = re.compile(r"^ckpt-(\d+)$")

log = logging.getLogger(__name__)


def model_layout(networks: dict[str, nn.Module]) -> list[str]:
    """Sorted ``network/tensor:shape`` entries of every parameter and buffer: what a checkpoint must match."""
    rows = []
    for net_name, net in networks.items():
        for key, t in list(net.named_parameters()) + list(net.named_buffers()):
            rows.append(f"{net_name}/{key}:{tuple(t.shape)}")
    return sorted(rows)


def fingerprint(layout: list[str]) -> str:
    """sha256 of a model layout."""
    return hashlib.sha256("\n".join(layout).encode()).hexdigest()


def _complete(root: Path) -> list[Path]:
    """The complete checkpoint folders under ``root``, oldest (lowest step) first."""
    if not root.is_dir():
        return []
    found = sorted((int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name)))
    return [p for _, p in found]


def find_latest(root: Path) -> Path | None:
    """The complete checkpoint folder with the highest step under ``root`` (``.tmp`` leftovers are ignored)."""
    found = _complete(root)
    return found[-1] if found else None


def prune(root: Path, keep: int = 1) -> list[Path]:
    """Remove the intermediate checkpoints of a finished job, keeping the newest ``keep`` complete ones.

    What is kept and why: the newest checkpoint is the finished state (every network, optimizer and RNG state
    after the last step). A generator job keeps no other copy of its trained networks: calling
    ``train_generator`` (``fit`` with resume) on the same folder loads it and trains nothing, which is how a
    generator is rebuilt to draw samples again. A segmentation job's later readers (quality, robustness) load
    ``segmenter.pt``, which lives outside ``checkpoints/`` and is never touched here; the final checkpoint is what
    a rerun of the job resumes to instead of training again. Older checkpoints (periodic ones, ends of earlier
    stages, the one written at a preemption signal) only serve to resume an unfinished run, and ``.tmp``
    leftovers of interrupted writes are never read at all: both are removed.

    Call it only when no process writes into ``root`` any more (after ``fit`` returned on every rank).
    The newest checkpoint's ``state.pt`` is read first: if it is damaged nothing is removed.

    Args:
        root: a run's ``checkpoints`` folder (a missing folder removes nothing).
        keep: newest complete checkpoints to keep, at least 1.

    Returns:
        The folders removed: ``.tmp`` leftovers, then the older checkpoints, oldest first.
    """
    if keep < 1:
        raise ConfigError(f"checkpoint prune: keep={keep} must be >= 1 (the newest checkpoint is the trained model)")
    found = _complete(root)
    if not found:
        return []
    read_state(found[-1])  # raises CheckpointError on a damaged newest checkpoint, before anything is removed
    leftovers = sorted(p for p in root.iterdir() if p.is_dir() and p.name.endswith(".tmp") and _NAME.match(p.stem))
    removed = leftovers + found[:-keep]
    for path in removed:
        shutil.rmtree(path)
    if removed:
        _fsync_dir(root)
    return removed


def rng_state() -> dict[str, Any]:
    """This process's python/numpy/torch RNG states as tensors and plain values (``weights_only``-loadable)."""
    py_version, py_state, py_gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": (py_version, torch.tensor(py_state, dtype=torch.int64), py_gauss),
        "numpy": (torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(int(v) for v in py_state.tolist()), py_gauss))
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(root: Path, ctx: Any, model: Trainable, layout: list[str], meta: dict[str, Any], keep: int) -> Path:
    """Write a checkpoint folder for ``meta["global_step"]`` (collective: every rank calls it).

    Args:
        root: the ``checkpoints`` folder.
        ctx: the engine's context (saves networks, optimizers, schedulers).
        model: the trainable (``state_extra``).
        layout: ``model_layout`` of the model.
        meta: stage index/name, step, global step, history and last losses.
        keep: newest checkpoints to keep (0 = all).

    Returns:
        The final checkpoint folder.
    """
    rank = distributed.get_rank()
    final = root / f"ckpt-{meta['global_step']:09d}"
    tmp = final.with_name(final.name + ".tmp")
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    distributed.barrier()
    payload = ctx.save_state(tmp)
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    if rank == 0:
        header = {"format": FORMAT, "version": VERSION, "engine": ctx.kind, "layout": layout}
        header |= {"fingerprint": fingerprint(layout), "world_size": distributed.get_world_size()}
        torch.save({**header, **meta, **payload, "extra": model.state_extra()}, tmp / "state.pt")
    _fsync_tree(tmp)  # each rank its own files: the rename below must never publish data still in a page cache
    distributed.barrier()
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        _prune(root, keep)
    distributed.barrier()
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """Flush a checkpoint folder's files and directories to disk (a node crash then leaves whole files or none)."""
    for dirpath, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(dirpath))


def _prune(root: Path, keep: int) -> None:
    if keep <= 0:
        return
    for path in _complete(root)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def _first_of(items: list[str], what: str) -> str:
    more = f" (+{len(items) - 1} more)" if len(items) > 1 else ""
    return f"{what} has {items[0]}{more}"


def _layout_difference(saved: list[str], current: list[str]) -> str:
    only_saved = sorted(set(saved) - set(current))
    only_model = sorted(set(current) - set(saved))
    parts = [_first_of(only_saved, "checkpoint")] if only_saved else []
    parts += [_first_of(only_model, "model")] if only_model else []
    return "; ".join(parts) or "fingerprints differ"


def read_state(path: Path) -> dict[str, Any]:
    """Read and check ``<path>/state.pt``; raise ``CheckpointError`` naming the file if it is not ours."""
    state_path = path / "state.pt"
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/foreign files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(state_path, f"cannot be read as a checkpoint ({reason[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(state_path, f"is not a {FORMAT} file")
    if state.get("version") != VERSION:
        raise CheckpointError(state_path, f"has format version {state.get('version')}, this suite reads {VERSION}")
    return state


def load(path: Path, ctx: Any, model: Trainable, layout: list[str], rank: int) -> dict[str, Any]:
    """Restore networks, optimizers, schedulers, model extras and RNG states from checkpoint folder ``path``.

    Args:
        path: a checkpoint folder written by ``save``.
        ctx: the engine's context (same engine kind as the one that wrote the checkpoint).
        model: the trainable to restore into.
        layout: ``model_layout`` of ``model``; a different one raises ``CheckpointError``.
        rank: this process's rank (selects its RNG file).

    Returns:
        The checkpoint's ``state.pt`` dict (stage index, step, global step, history, final losses).
    """
    state = read_state(path)
    state_path = path / "state.pt"
    if state.get("fingerprint") != fingerprint(layout):
        diff = _layout_difference(list(state.get("layout", [])), layout)
        raise CheckpointError(state_path, f"was written for a different model ({diff})")
    if state.get("engine") != ctx.kind:
        raise CheckpointError(state_path, f"was written by train.engine={state.get('engine')}, not {ctx.kind}")
    written, world = int(state.get("world_size", 1)), distributed.get_world_size()
    if written != world:  # a step on N ranks stands for N one-rank steps, and ZeRO shards optimizer state N ways
        raise CheckpointError(
            state_path,
            f"was written by a {written}-rank job and this one has {world} rank(s): run it on {written} rank(s) "
            "to resume, or move its checkpoints folder away to train from the start",
        )
    try:
        ctx.load_state(path, state)
        model.load_state_extra(state["extra"])
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(state_path, f"cannot be restored ({type(exc).__name__}: {exc})") from None
    rng_path = path / f"rng-rank{rank}.pt"
    if rng_path.is_file():
        try:
            set_rng_state(torch.load(rng_path, map_location="cpu", weights_only=True))
        except Exception as exc:
            raise CheckpointError(rng_path, f"cannot be read ({type(exc).__name__})") from None
    else:
        log.warning("%s: no RNG state for rank %d (world size changed); keeping fresh seeds", path, rank)
    return state
