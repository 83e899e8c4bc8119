"""A generator's synthetic volumes for one split and seed, as listed in its ``samples.json``.

The generator job writes the folder (``benchmark.run.kinds.generator``); ``load_synth_index`` reads it back for the
segmentation arms and checks that every listed volume exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from benchmark.errors import DataError

SAMPLES_FILE = "samples.json"


@dataclass(frozen=True)
class SynthSample:
    """One synthetic volume: ``case_id`` is the real case whose label map conditioned it, ``copy`` which of the
    volumes sampled from that label map (0, 1, ... with different seeds; several for ratios above 1)."""

    case_id: str
    path: Path
    copy: int = 0


@dataclass(frozen=True)
class SynthIndex:
    """A generator's output folder for one split and seed, read from its ``samples.json``."""

    folder: Path
    generator: str
    seed: int
    protocol: str
    train_case_ids: tuple[str, ...]
    samples: tuple[SynthSample, ...]
    split: int | str = "<split>"


def generator_command(generator: str, split: int | str, seed: int) -> str:
    """The command that trains a generator on one split and writes its synthetic volumes."""
    return f"python launchers/train_generator.py --generator {generator} --split {split} --seed {seed}"


def load_synth_index(folder: str | Path, *, generator: str, split: int | str, seed: int) -> SynthIndex:
    """Read a generator's ``samples.json`` and check that every listed volume exists.

    Args:
        folder: the generator's output folder for this split and seed.
        generator, split, seed: what the folder should hold (used in messages and checked against the file).

    Returns:
        The ``SynthIndex``. A missing folder, file or volume raises ``DataError`` naming the path and the command
        that makes it.
    """
    folder = Path(folder)
    file = folder / SAMPLES_FILE
    make = f"make them with: {generator_command(generator, split, seed)}"
    if not file.is_file():
        raise DataError(file, f"no synthetic volumes of {generator} for split {split}, seed {seed}; {make}")
    try:
        d = json.loads(file.read_text())
        samples = tuple(SynthSample(str(s["case_id"]), folder / s["path"], int(s.get("copy", 0))) for s in d["samples"])
        index = SynthIndex(
            folder=folder,
            generator=str(d["generator"]),
            seed=int(d["seed"]),
            protocol=str(d["protocol"]),
            train_case_ids=tuple(str(c) for c in d["train_case_ids"]),
            samples=samples,
            split=split,
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(file, f"not a valid samples file ({type(exc).__name__}: {exc}); {make}") from None
    if index.generator != generator:
        raise DataError(file, f"holds samples of {index.generator!r}, expected {generator!r}")
    if "split" in d and str(d["split"]) != str(split):
        raise DataError(file, f"holds samples of split {d['split']}, expected split {split}")
    for s in samples:
        if not s.path.resolve().is_relative_to(folder.resolve()):
            raise DataError(file, f"sample path {s.path} escapes the folder")
        if not s.path.is_file():
            raise DataError(s.path, f"synthetic volume listed in {file} is missing; {make}")
    return index
