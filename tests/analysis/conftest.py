"""Builders of small, fully deterministic per-case frames for the analysis tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def build_rows(shifts: dict[str, float], *, n_splits: int = 5, n_cases: int = 10, seeds=(0,), metric="dice"):
    """Per-case rows: baseline values fixed per case; each arm = baseline + shift + split jitter + zero-mean noise.

    The case noise (0.002 steps, centred) averages to zero within every split and has no ties; the split jitter
    (-0.004..+0.004) averages to zero over the 5 splits. An arm's per-split mean difference is shift + jitter.
    """
    jitter = np.array([0.004, -0.002, 0.0, 0.002, -0.004])
    rows = []
    for split in range(n_splits):
        for seed in seeds:
            for case in range(n_cases):
                base = 0.70 + 0.01 * ((case * 7 + split * 3) % 11)
                for arm, shift in {"real": None, **shifts}.items():
                    value = (
                        base if shift is None else base + shift + jitter[split % 5] + 0.002 * (case - (n_cases - 1) / 2)
                    )
                    rows.append(
                        dict(
                            study="t",
                            split=split,
                            seed=seed,
                            generator="",
                            arm=arm,
                            case_id=f"c{split}_{case}",
                            metric=metric,
                            value=value,
                            reason="",
                        )
                    )
    return pd.DataFrame(rows)


@pytest.fixture
def three_arms() -> pd.DataFrame:
    return build_rows({"real+good": 0.05, "real+same": 0.0, "real+bad": -0.05})


@pytest.fixture
def sizes() -> dict[int, tuple[int, int]]:
    return {s: (28, 12) for s in range(5)}


@pytest.fixture
def make_rows():
    return build_rows
