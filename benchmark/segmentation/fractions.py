"""The training-data fraction axis (``segmentation.fractions``): which of a split's real training patients an arm
trains on at fraction ``f``.

The patients are chosen patient-wise (every scan of a chosen patient, none of the others), per split and seed, by a
seeded permutation of the split's training patients: fraction ``f`` takes the first ``max(1, round(f * n))`` of
them (halves round up), so the subsets are nested (the 0.25 subset is inside the 0.5 subset inside 1.0) and fraction
1.0 is the split's whole training set, in its own order. An arm at fraction ``f`` is built from those cases alone:
its synthetic part from their label maps (the ratio counts the fraction's real volumes), the oracle's extra real
scans as many as its synthetic counterpart would add, ``real@matched`` the steps of the largest arm at ``f``.

Under ``per_split`` a generator of fraction ``f`` < 1 is a scope of its own, ``split<k>@f<f>`` (job key
``gen/split<k>@f<f>/<generator>/seed<s>``), trained on the fraction's cases only; its samples go to
``samples/split<k>/<generator>/seed<s>@f<f>``. Under ``disjoint_pool`` and ``shared`` the generators never train on
a split's own training set alone, so every fraction draws from the one generator of the scope. Names, keys and
folders carry no fraction part at 1.0: a study without the axis keeps its job keys and hashes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SUFFIX = "@f"


def suffix(fraction: float) -> str:
    """``""`` at 1.0, else ``@f<fraction>`` (``@f0.5``): the part a fraction adds to arm folders, keys and scopes."""
    return "" if float(fraction) == 1.0 else f"{SUFFIX}{float(fraction):g}"


def split_suffix(name: str) -> tuple[str, float]:
    """``(name without its fraction part, fraction)``: ``real+x@r2@f0.5`` -> ``("real+x@r2", 0.5)``.

    Args:
        name: an arm folder or a generator scope; without an ``@f`` part the fraction is 1.0.
    """
    head, sep, tail = name.rpartition(SUFFIX)
    if sep and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return name, 1.0


def generator_scope(scope: str, fraction: float, protocol: str) -> str:
    """The generator scope serving the arms of ``fraction``: a scope of its own under ``per_split`` below 1.0.

    Args:
        scope: the split's scope (``Study.scope``: ``pool``, ``split<k>`` or ``all``).
        fraction: the arm's fraction.
        protocol: ``splits.protocol``.
    """
    return scope + suffix(fraction) if protocol == "per_split" else scope


def n_patients(fraction: float, n: int) -> int:
    """Patients at ``fraction`` of ``n``: ``round(fraction * n)`` with halves up, at least 1 (``n`` at 1.0)."""
    return n if float(fraction) == 1.0 else max(1, min(n, math.floor(fraction * n + 0.5)))


def fraction_patients(train_patients: Sequence[str], fraction: float, seed: int, split: int | str) -> tuple[str, ...]:
    """The training patients of one split kept at ``fraction``, nested across fractions.

    Args:
        train_patients: the split's training patients.
        fraction: in (0, 1].
        seed: the arm's training seed.
        split: the split's index.

    Returns:
        A prefix of a permutation seeded by (seed, split) alone, so a smaller fraction's patients are a subset of a
        larger one's; at 1.0 every patient.
    """
    patients = sorted(train_patients)
    entropy = [int(seed), zlib.crc32(str(split).encode()), zlib.crc32(b"segmentation.fractions")]
    order = np.random.default_rng(np.random.SeedSequence(entropy)).permutation(len(patients))
    return tuple(patients[int(i)] for i in order[: n_patients(fraction, len(patients))])


def fraction_cases(split: Any, fraction: float, seed: int, patient_of: Mapping[str, str]) -> tuple[str, ...]:
    """The split's training cases of the patients kept at ``fraction`` (``fraction_patients``), in the split's order.

    Args:
        split: a ``benchmark.data.splits.Split`` (``index``, ``train_cases``; ``train_patients`` when known).
        fraction: in (0, 1]; 1.0 gives ``split.train_cases`` unchanged.
        seed: the arm's training seed.
        patient_of: case id -> patient id (a case with none is its own patient).
    """
    if float(fraction) == 1.0:
        return tuple(split.train_cases)
    patients = getattr(split, "train_patients", None) or sorted({patient_of.get(c, c) for c in split.train_cases})
    kept = set(fraction_patients(patients, fraction, seed, split.index))
    return tuple(c for c in split.train_cases if patient_of.get(c, c) in kept)
