"""Summary tables and their writers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark.analysis.tables import (
    format_frame,
    quality_notes,
    quality_table,
    read_rows,
    segmentation_table,
    to_latex,
    to_markdown,
    write_table,
)
from benchmark.errors import DataError


def _quality_rows() -> pd.DataFrame:
    rows = []
    for split in range(2):
        for seed in range(2):
            fid = 10.0 + 2 * split + seed  # runs: 10, 11, 12, 13 -> mean 11.5, sd sqrt(5/3)
            rows.append(dict(split=split, seed=seed, generator="spade_ldm", metric="fid", value=fid, backbone="r34"))
            for case, psnr in enumerate((20.0, 22.0)):  # per-case rows: averaged per run first -> 21 each run
                rows.append(
                    dict(
                        split=split,
                        seed=seed,
                        generator="spade_ldm",
                        metric="psnr",
                        value=psnr,
                        case_id=f"c{case}",
                        backbone=None,
                    )
                )
    return pd.DataFrame(rows)


def test_quality_table_mean_sd_ci_across_runs():
    q = quality_table(_quality_rows(), n_boot=500, seed=0).set_index("metric")
    assert q.loc["fid", "mean"] == pytest.approx(11.5)
    assert q.loc["fid", "sd"] == pytest.approx(np.sqrt(5 / 3))
    assert q.loc["fid", "n_runs"] == 4 and q.loc["fid", "backbone"] == "r34"
    assert 10.0 <= q.loc["fid", "ci_low"] < 11.5 < q.loc["fid", "ci_high"] <= 13.0
    assert q.loc["psnr", "mean"] == pytest.approx(21.0) and q.loc["psnr", "sd"] == pytest.approx(0.0)
    assert q.loc["psnr", "n_runs"] == 4
    assert quality_table(None).empty and list(quality_table(pd.DataFrame()).columns)[0] == "generator"


def test_quality_notes_become_one_line():
    rows = _quality_rows()
    assert quality_notes(rows) == []  # no note column
    notes = ["FID from 6 samples of 512-dimensional features", None, "FID from 6 samples of 512-dimensional features"]
    sets = rows[rows.case_id.isna()].assign(note=notes + ["FID from 5 samples of 512-dimensional features"])
    with_notes = pd.concat([rows[rows.case_id.notna()], sets], ignore_index=True)
    assert quality_notes(with_notes) == [
        "Image quality: fid in 3 of 4 run(s): FID from 6 samples of 512-dimensional features; "
        "FID from 5 samples of 512-dimensional features"
    ]
    assert quality_notes(with_notes.assign(note=None)) == [] and quality_notes(None) == []


def test_segmentation_table_per_split_and_pooled():
    rows = pd.DataFrame(
        [
            dict(split=s, arm="real", case_id=f"c{c}", metric="dice", value=v)
            for s, vals in ((0, (0.8, 0.6)), (1, (0.9, np.nan)))
            for c, v in enumerate(vals)
        ]
    )
    t = segmentation_table(rows).set_index("split")
    assert t.loc["0", "mean"] == pytest.approx(0.7) and t.loc["0", "n"] == 2
    assert t.loc["1", "mean"] == pytest.approx(0.9) and t.loc["1", "n_nan"] == 1
    assert t.loc["all", "mean"] == pytest.approx((0.8 + 0.6 + 0.9) / 3)
    assert t.loc["all", "sd_splits"] == pytest.approx(np.std([0.7, 0.9], ddof=1))
    assert t.loc["all", "n"] == 3 and t.loc["all", "n_nan"] == 1


def test_markdown_and_latex_writers_escape_and_format():
    frame = pd.DataFrame({"arm": ["real+spade_ldm", "a|b"], "value": [0.123456, np.nan], "n": [3, 4]})
    md = to_markdown(frame, digits=3)
    assert md.splitlines()[0] == "| arm | value | n |"
    assert md.splitlines()[1] == "|---|---:|---:|"
    assert "| real+spade_ldm | 0.123 | 3 |" in md and r"a\|b" in md and "| - |" in md
    tex = to_latex(frame, caption="Dice 50% & more", label="tab:x")
    assert r"\begin{tabular}{lrr}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"real+spade\_ldm & 0.123 & 3 \\" in tex and r"Dice 50\% \& more" in tex
    assert format_frame(pd.DataFrame({"p": [1.2e-7, float("inf")]})).p.tolist() == ["1.20e-07", "inf"]


def test_write_table_and_read_rows(tmp_path):
    frame = pd.DataFrame({"split": [0, 1], "value": [0.5, 0.25]})
    paths = write_table(frame, tmp_path / "out" / "t")
    assert sorted(paths) == ["csv", "md", "tex"] and all(p.is_file() for p in paths.values())
    assert not list((tmp_path / "out").glob("*tmp*"))
    assert read_rows(paths["csv"])["value"].tolist() == [0.5, 0.25]
    (tmp_path / "rows" / "sub").mkdir(parents=True)
    frame.to_csv(tmp_path / "rows" / "a.csv", index=False)
    frame.assign(extra=1).to_csv(tmp_path / "rows" / "sub" / "b.csv", index=False)
    (tmp_path / "rows" / ".a.tmp-1-abcd.csv").write_text("split,value\n9,9.0\n")  # a write in progress: not read
    both = read_rows(tmp_path / "rows")
    assert len(both) == 4 and both["extra"].isna().sum() == 2
    assert read_rows(tmp_path / "rows" / "sub").shape[0] == 2
    with pytest.raises(DataError, match="no such file or folder"):
        read_rows(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown table format"):
        write_table(frame, tmp_path / "x", formats=("xlsx",))
