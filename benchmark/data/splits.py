"""Repeated random patient-wise train/test splits, written once to ``splits.json`` and read by every job.

Protocols (``splits.protocol``), recorded in the file:

- ``per_split``: generators are retrained inside each split on its training patients (strictest);
- ``disjoint_pool``: a seeded share of patients (``pool_fraction``) is set aside to train the generators once;
  the repeated splits run over the remaining patients, so no generator ever saw a segmentation test patient;
- ``shared``: the paper's protocol, generators trained on all patients, which includes every split's test
  patients. Allowed for reproduction and flagged as leaky wherever it is reported. ``generator_holdout`` leaves
  whole patients (at least that many scans, seeded) out of generator training, as the paper's validation cases.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmark.atomic import write_text_atomic
from benchmark.config import SplitsConfig
from benchmark.errors import ConfigError, DataError

LEAKY_PROTOCOLS = ("shared",)


@dataclass(frozen=True, kw_only=True)
class Split:
    """One patient-wise split."""

    index: int
    train_patients: tuple[str, ...]
    test_patients: tuple[str, ...]
    train_cases: tuple[str, ...]
    test_cases: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class SplitPlan:
    """Everything ``splits.json`` holds.

    Args:
        protocol: generator protocol (see module docstring).
        seed: the seed that drew the splits.
        splits: the repeated splits.
        pool_patients / pool_cases: generator-training pool (``disjoint_pool`` only; empty otherwise).
        dataset_digest: manifest digest of the data the splits were drawn from.
        generator_holdout_cases: cases no generator trains on (``shared`` with ``splits.generator_holdout``).
    """

    protocol: str
    seed: int
    splits: tuple[Split, ...]
    pool_patients: tuple[str, ...] = ()
    pool_cases: tuple[str, ...] = ()
    dataset_digest: str = ""
    generator_holdout_cases: tuple[str, ...] = ()

    def generator_train_cases(self, split: int | None) -> tuple[str, ...]:
        """Cases a generator is trained on: the pool, the split's training cases, or all cases (shared)."""
        if self.protocol == "disjoint_pool":
            return self.pool_cases
        if self.protocol == "per_split":
            if split is None:
                raise ConfigError("splits.protocol: per_split generators need a split index")
            return self.splits[split].train_cases
        every = {c for s in self.splits for c in s.train_cases + s.test_cases} | set(self.pool_cases)
        return tuple(sorted(every - set(self.generator_holdout_cases)))

    @property
    def leaky(self) -> bool:
        return self.protocol in LEAKY_PROTOCOLS


def make_splits(patients: dict[str, list[str]], cfg: SplitsConfig, dataset_digest: str = "") -> SplitPlan:
    """Draw the splits.

    Args:
        patients: patient id -> case ids (``Manifest.patients()``).
        cfg: number of splits, test fraction, seed, protocol and pool fraction.
        dataset_digest: recorded so a stale ``splits.json`` is noticed.

    Returns:
        A ``SplitPlan``; every split is checked patient-wise before it is returned.
    """
    if cfg.n_splits < 1:
        raise ConfigError(f"splits.n_splits: must be >= 1, got {cfg.n_splits}")
    if not 0.0 < cfg.test_fraction < 1.0:
        raise ConfigError(f"splits.test_fraction: must be in (0, 1), got {cfg.test_fraction}")
    rng = np.random.default_rng(cfg.seed)
    ids = sorted(patients)
    pool: list[str] = []
    if cfg.protocol == "disjoint_pool":
        if not 0.0 < cfg.pool_fraction < 1.0:
            raise ConfigError(f"splits.pool_fraction: must be in (0, 1), got {cfg.pool_fraction}")
        n_pool = max(1, round(cfg.pool_fraction * len(ids)))
        pool = sorted(rng.choice(ids, n_pool, replace=False).tolist())
        ids = [p for p in ids if p not in set(pool)]
    n_test = max(1, round(cfg.test_fraction * len(ids)))
    if len(ids) - n_test < 1:
        raise ConfigError(f"splits: {len(ids)} patients are too few for a train/test split")
    if math.comb(len(ids), n_test) < cfg.n_splits:
        raise ConfigError(
            f"splits.n_splits: {cfg.n_splits} splits asked for, but {len(ids)} patients give only "
            f"{math.comb(len(ids), n_test)} distinct test sets of {n_test}; use fewer splits or more patients"
        )
    splits, seen = [], set()
    for i in range(cfg.n_splits):
        # a test set drawn before is drawn again: a repeated split would count one experiment twice in the
        # across-split tests (the draws before the first repeat are unchanged)
        while (test := tuple(sorted(rng.choice(ids, n_test, replace=False).tolist()))) in seen:
            pass
        seen.add(test)
        train = [p for p in ids if p not in set(test)]
        splits.append(_split(i, train, list(test), patients))
    holdout = _holdout(ids, patients, cfg.generator_holdout, rng) if cfg.generator_holdout else ()
    plan = SplitPlan(
        protocol=cfg.protocol,
        seed=cfg.seed,
        splits=tuple(splits),
        pool_patients=tuple(pool),
        pool_cases=tuple(sorted(c for p in pool for c in patients[p])),
        dataset_digest=dataset_digest,
        generator_holdout_cases=holdout,
    )
    check_plan(plan, "splits")
    return plan


def _holdout(ids: list[str], patients: dict[str, list[str]], n: int, rng: np.random.Generator) -> tuple[str, ...]:
    """Whole patients in a seeded order until at least ``n`` scans are held out of generator training."""
    cases: list[str] = []
    for pid in rng.permutation(ids).tolist():
        if len(cases) >= n:
            break
        cases += patients[pid]
    if len(cases) < n or len(cases) == sum(len(patients[p]) for p in ids):
        raise ConfigError(f"splits.generator_holdout: {n} leaves no scan of the {len(ids)} patients to train on")
    return tuple(sorted(cases))


def _split(index: int, train: list[str], test: list[str], patients: dict[str, list[str]]) -> Split:
    return Split(
        index=index,
        train_patients=tuple(train),
        test_patients=tuple(test),
        train_cases=tuple(sorted(c for p in train for c in patients[p])),
        test_cases=tuple(sorted(c for p in test for c in patients[p])),
    )


def check_plan(plan: SplitPlan, source: str | Path, patients: dict[str, list[str]] | None = None) -> None:
    """Fail if any patient is in train and test of a split, or (disjoint_pool) in the pool and a test set, or if two
    splits have the same test patients (the across-split tests would count that experiment twice).

    Args:
        plan: the splits.
        source: file name for the message.
        patients: when given, also checks every case belongs to the patient the split says.
    """
    first: dict[tuple[str, ...], int] = {}
    for s in plan.splits:
        earlier = first.setdefault(tuple(sorted(s.test_patients)), s.index)
        if earlier != s.index:
            raise DataError(source, f"split {s.index}: the same test patients as split {earlier}")
        both = set(s.train_patients) & set(s.test_patients)
        if both:
            raise DataError(source, f"split {s.index}: patients in both train and test: {sorted(both)}")
        if plan.protocol == "disjoint_pool":
            pooled = set(plan.pool_patients) & (set(s.test_patients) | set(s.train_patients))
            if pooled:
                raise DataError(source, f"split {s.index}: generator-pool patients also in the split: {sorted(pooled)}")
        if set(s.train_cases) & set(s.test_cases):
            raise DataError(source, f"split {s.index}: cases in both train and test")
        if patients is not None:
            owner = {c: p for p, cs in patients.items() for c in cs}
            for part, pats, cases in (
                ("train", s.train_patients, s.train_cases),
                ("test", s.test_patients, s.test_cases),
            ):
                unknown = [c for c in cases if c not in owner]
                if unknown:
                    raise DataError(source, f"split {s.index}: unknown {part} cases {unknown[:5]}")
                stray = sorted({owner[c] for c in cases} - set(pats))
                if stray:
                    raise DataError(source, f"split {s.index}: {part} cases of patients {stray} not listed in {part}")
            leak = sorted({owner[c] for c in s.train_cases} & {owner[c] for c in s.test_cases})
            if leak:
                raise DataError(source, f"split {s.index}: patients {leak} have scans in both train and test")


def save_splits(plan: SplitPlan, path: str | Path) -> Path:
    """Write ``splits.json`` once. An existing file with different content is never overwritten."""
    path = Path(path)
    fields = asdict(plan)
    if not plan.generator_holdout_cases:  # files without a hold-out keep the layout they always had
        del fields["generator_holdout_cases"]
    payload = json.dumps(fields, indent=1)
    if path.exists():
        if load_splits(path) != plan:
            raise DataError(path, "exists with different splits; refusing to overwrite (delete it to redraw)")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, payload)


def load_splits(path: str | Path, patients: dict[str, list[str]] | None = None) -> SplitPlan:
    """Read and check ``splits.json`` (ours, or a user-supplied one in the same format)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "splits file not found")
    try:
        d = json.loads(path.read_text())
        splits = tuple(
            Split(
                index=int(s["index"]),
                **{k: tuple(s[k]) for k in ("train_patients", "test_patients", "train_cases", "test_cases")},
            )
            for s in d["splits"]
        )
        plan = SplitPlan(
            protocol=d["protocol"],
            seed=int(d["seed"]),
            splits=splits,
            pool_patients=tuple(d.get("pool_patients", ())),
            pool_cases=tuple(d.get("pool_cases", ())),
            dataset_digest=d.get("dataset_digest", ""),
            generator_holdout_cases=tuple(d.get("generator_holdout_cases", ())),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(path, f"not a valid splits file ({type(exc).__name__}: {exc})") from None
    check_plan(plan, path, patients)
    return plan
