"""Every figure is written as a real PNG and SVG; bad input raises DataError naming the argument."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark.analysis import plots
from benchmark.errors import DataError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check(paths: dict) -> None:
    assert paths["png"].read_bytes()[:8] == PNG_MAGIC
    svg = paths["svg"].read_text()
    assert "<svg" in svg and svg.rstrip().endswith("</svg>")
    assert not list(paths["png"].parent.glob("*tmp*"))


def test_metric_per_arm_and_split_lines(tmp_path, three_arms):
    out = plots.plot_metric_per_arm(three_arms, tmp_path / "dice")
    _check(out)
    svg = out["svg"].read_text()
    assert "split 0" in svg and "real+good" in svg  # legend entry per split, tick per arm
    with pytest.raises(DataError, match="no finite 'hd95' values"):
        plots.plot_metric_per_arm(three_arms, tmp_path / "x", metric="hd95")
    with pytest.raises(DataError, match="seg_rows: no rows to plot"):
        plots.plot_metric_per_arm(pd.DataFrame(), tmp_path / "x")


def test_quality_with_cis(tmp_path):
    rows = pd.DataFrame(
        [
            dict(generator=g, metric=m, value=v, ci_low=v * 0.9, ci_high=v * 1.1, split=s, seed=0)
            for g, base in (("pix2pix3d", 40.0), ("spade_ldm", 20.0))
            for m, v in (("fid", base), ("kid", base / 1e3))
            for s in range(3)
        ]
    )
    _check(plots.plot_quality(rows, tmp_path / "q"))
    with pytest.raises(DataError, match="no rows for metrics"):
        plots.plot_quality(rows, tmp_path / "q2", metrics=("mmd",))


def test_montage_training_curves_and_k_selection(tmp_path):
    rng = np.random.default_rng(0)
    real = rng.random((16, 16, 8)).astype(np.float32)
    label = (real > 0.5).astype(np.uint8)
    _check(plots.plot_montage(real, {"spade_ldm": real[::-1].copy()}, tmp_path / "m", label=label))
    with pytest.raises(DataError, match="spade_gan: volume shape"):
        plots.plot_montage(real, {"spade_gan": real[:8]}, tmp_path / "m2")
    curves = pd.DataFrame(
        [dict(run=f"r{r}", step=s, metric="loss", value=1 / (s + 1 + r)) for r in range(2) for s in range(5)]
    )
    _check(plots.plot_training_curves(curves, tmp_path / "c", logy=True))
    scores = pd.DataFrame({"k": [2, 3, 4], "silhouette": [0.4, 0.5, 0.45], "davies_bouldin": [1.0, 0.8, 0.9]})
    _check(plots.plot_k_selection(scores, tmp_path / "k", chosen_k=3))
    with pytest.raises(DataError, match="scores: missing columns"):
        plots.plot_k_selection(scores.drop(columns="silhouette"), tmp_path / "k2")


def test_figures_are_byte_identical_across_runs(tmp_path):
    scores = pd.DataFrame({"k": [2, 3, 4], "silhouette": [0.4, 0.5, 0.45], "davies_bouldin": [1.0, 0.8, 0.9]})
    a = plots.plot_k_selection(scores, tmp_path / "a")
    b = plots.plot_k_selection(scores, tmp_path / "b")
    assert a["svg"].read_bytes() == b["svg"].read_bytes()
    assert a["png"].read_bytes() == b["png"].read_bytes()
