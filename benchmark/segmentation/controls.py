"""The draws behind the two control arms of ``benchmark.segmentation.arms``.

- The oracle ``real+real_extra`` adds real scans of patients outside the split (neither its training nor its test
  patients; under ``disjoint_pool`` these are the generators' pool): ``outside_cases`` lists them, ``draw_extra``
  picks as many as a synthetic arm adds.
- The negative control ``real+mismatched:<generator>`` pairs each synthetic volume with the expert label of
  another training case: ``derange_cases`` is that pairing.

Both draws are seeded by ``control_rng(seed, split, arm kind)``, so they differ between splits and seeds and are
reproduced by a re-run.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from benchmark.errors import ConfigError, DataError

ORACLE = "real+real_extra"
MISMATCHED = "real+mismatched"
# the protocols whose splits leave patients outside every split (the generators' pool)
POOL_PROTOCOLS = ("disjoint_pool",)


def control_rng(seed: int, split: int | str, kind: str) -> np.random.Generator:
    """The RNG of one control arm's draw: seeded by (training seed, split index, arm kind).

    Args:
        seed: the arm's training seed.
        split: the split's index.
        kind: the arm kind (``real+real_extra`` or ``real+mismatched``), so the two draws are independent.
    """
    entropy = [int(seed), zlib.crc32(str(split).encode()), zlib.crc32(kind.encode())]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def outside_cases(split: Any, patient_of: Mapping[str, str]) -> tuple[str, ...]:
    """Cases of patients who are neither training nor test patients of ``split`` (under ``disjoint_pool``: the pool).

    Args:
        split: a ``benchmark.data.splits.Split`` (``train_patients``, ``test_patients``).
        patient_of: case id -> patient id, for every case of the study.
    """
    inside = set(split.train_patients) | set(split.test_patients)
    return tuple(sorted(c for c, p in patient_of.items() if p not in inside))


def check_protocol(arms: Sequence[str], protocol: str) -> None:
    """Raise a one-line ``ConfigError`` when the oracle arm is asked for under a protocol without a pool.

    Args:
        arms: the study's arms (``segmentation.arms``, expanded).
        protocol: ``splits.protocol``.
    """
    if ORACLE in arms and protocol not in POOL_PROTOCOLS:
        raise ConfigError(no_pool_message(protocol))


def no_pool_message(protocol: str | None) -> str:
    """The message of a missing pool for the oracle arm, naming both config keys."""
    return (
        f"segmentation.arms: {ORACLE} needs real scans of patients outside every split, and splits.protocol "
        f"{protocol!r} leaves none (use splits.protocol=disjoint_pool, whose pool supplies them, or drop the arm)"
    )


def draw_extra(extra_ids: Sequence[str], n: int, rng: np.random.Generator) -> tuple[list[str], str]:
    """``n`` case ids from ``extra_ids``: without replacement when there are enough, else with balanced repeats.

    Repeats: a seeded permutation of all of ``extra_ids`` is cycled, so every outside scan is used
    ``n // len`` or ``n // len + 1`` times (never one scan many times while another is unused).

    Args:
        extra_ids: the cases outside the split (``outside_cases``), non-empty.
        n: how many the arm adds.
        rng: ``control_rng(seed, split, "real+real_extra")``.

    Returns:
        The drawn ids (in draw order) and how they were filled: ``"distinct"`` or ``"repeated"``.
    """
    pool = sorted(extra_ids)
    if not pool:
        raise DataError("<outside cases>", f"{ORACLE}: no cases to draw from")
    if n <= len(pool):
        return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)], "distinct"
    order = rng.permutation(len(pool))
    return [pool[order[k % len(pool)]] for k in range(n)], "repeated"


def derange_cases(
    case_ids: Sequence[str], patient_of: Mapping[str, str] | None, rng: np.random.Generator
) -> dict[str, str]:
    """A seeded derangement of ``case_ids`` that pairs no case with itself or with a scan of its own patient.

    Patients are put in a random order with their cases (shuffled) next to each other, and every case is paired
    with the case ``m`` places later, cyclically, where ``m`` is the largest number of scans of one patient: a
    bijection that leaves every patient's block, possible exactly when no patient holds more than half the cases.

    Args:
        case_ids: the split's training cases.
        patient_of: case id -> patient id (None: every case is its own patient).
        rng: ``control_rng(seed, split, "real+mismatched")``.

    Returns:
        case id -> the case whose label map it is paired with.
    """
    groups: dict[str, list[str]] = {}
    for c in sorted(case_ids):
        groups.setdefault(patient_of[c] if patient_of is not None else c, []).append(c)
    n, m = len(case_ids), max((len(g) for g in groups.values()), default=0)
    if n < 2 or 2 * m > n:
        raise DataError(
            "<split training cases>",
            f"{MISMATCHED}: {n} training cases of {len(groups)} patients cannot be paired with other patients' "
            "label maps (one patient holds more than half of them); use more training patients",
        )
    order: list[str] = []
    for p in rng.permutation(sorted(groups)):
        order += [groups[p][i] for i in rng.permutation(len(groups[p]))]
    return {order[i]: order[(i + m) % n] for i in range(n)}
