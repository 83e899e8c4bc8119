"""Atomic file writes: write under a temp name in the target's folder, then one ``os.replace``.

Each writer gets its own temp name (process id and a random tag), so two processes writing the same file at once
(two jobs preparing the same study, two ranks, a rerun beside a straggler) never rename each other's temp file
away: the last rename wins, and readers only ever see a complete file. A failed write removes its temp file and
leaves the previous target as it was.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Suffixes that writers infer the format from (nibabel, numpy, matplotlib): the temp name keeps them.
_DOUBLE_SUFFIXES = (".nii.gz", ".tar.gz")


def temp_path(path: str | Path) -> Path:
    """A unique sibling of ``path`` that keeps its suffix (``maps.npz`` -> ``.maps.tmp-<pid>-<tag>.npz``)."""
    path = Path(path)
    name = path.name
    suffix = next((s for s in _DOUBLE_SUFFIXES if name.lower().endswith(s)), path.suffix)
    stem = name[: len(name) - len(suffix)] if suffix else name
    return path.with_name(f".{stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def is_temp(path: str | Path) -> bool:
    """Whether ``path`` is the temp file of a write in progress (or of a writer killed mid-write): readers skip it."""
    name = Path(path).name
    return name.startswith(".") and ".tmp-" in name


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path to write; on success it replaces ``path``, on error it is removed.

    Example::

        with atomic_path(folder / "maps.npz") as tmp:
            np.savez_compressed(tmp, **maps)
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
