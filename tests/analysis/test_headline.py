"""The report's first screen: one line per arm (whatever the arms are called), the forest plot and Table 1."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from benchmark.analysis.headline import answer_lines, first_screen
from benchmark.analysis.plots import plot_forest
from benchmark.analysis.report import build_report
from benchmark.analysis.significance import significance_table
from benchmark.analysis.tables import table1
from benchmark.errors import DataError

# Arm and generator names the suite does not know in advance: nothing on the first screen may depend on them.
ARMS = {"real+real_extra": 0.04, "real+mismatched:labels2image": -0.04, "real+labels2image": 0.0}


def _both_metrics(make_rows) -> pd.DataFrame:
    dice = make_rows(ARMS)
    hd95 = make_rows({a: -50 * s for a, s in ARMS.items()}, metric="hd95")  # 0.04 Dice ~ 2 mm less HD95
    return pd.concat([dice, hd95], ignore_index=True)


def _significance(rows, sizes, arms=None) -> pd.DataFrame:
    tables = [significance_table(rows, sizes, metric=m, arms=arms) for m in ("dice", "hd95")]
    return pd.concat(tables, ignore_index=True)


def _quality(generators=("labels2image", "spade_ldm")) -> pd.DataFrame:
    """A ``quality_table``-shaped summary: generator i has FID 1 + i, KID 0.004 + 0.001 i, PSNR 16 - i, ..."""
    rows = []
    for i, gen in enumerate(generators):
        values = {"fid": 1.0 + i, "kid": 0.004 + 0.001 * i, "mmd": 0.5 + i, "psnr": 16.0 - i, "ms_ssim": 0.9,
                  "ms_ssim_mean": 0.9, "dice_cavity": 0.85 - 0.1 * i, "memorisation_fraction_voxel": 0.0,
                  "realism_auc": 0.6 + 0.1 * i, "c2st_auc": 0.75 - 0.1 * i, "c2st_prob_synthetic": 0.6}  # fmt: skip
        for metric, value in values.items():
            backbone = "r3d18" if metric in ("fid", "kid", "mmd", "c2st_auc") else ""
            sd = 0.0002 if metric == "kid" else 0.01
            rows.append(dict(generator=gen, metric=metric, backbone=backbone, mean=value, sd=sd, n_runs=3))
    return pd.DataFrame(rows)


def test_answer_lines_in_display_units_for_every_arm(make_rows, sizes):
    sig = _significance(_both_metrics(make_rows), sizes)
    lines = answer_lines(sig).set_index(["arm", "metric"])
    assert sorted({a for a, _ in lines.index}) == sorted(ARMS)
    extra = lines.loc[("real+real_extra", "dice")]
    assert extra["verdict"] == "improves" and extra["unit"] == "points"
    assert extra["effect"] == pytest.approx(4.0)  # 0.04 Dice = 4 points
    pooled = sig[(sig["scope"] == "pooled") & (sig["arm"] == "real+real_extra") & (sig["metric"] == "dice")].iloc[0]
    assert extra["mde"] == pytest.approx(100 * pooled["mde"]) and extra["ci_low"] == pytest.approx(
        100 * pooled["t_ci_low"]
    )
    assert extra["lucky"] == 5 and extra["n_splits"] == 5
    assert lines.loc[("real+mismatched:labels2image", "dice"), "verdict"] == "worse"
    hd = lines.loc[("real+real_extra", "hd95")]
    assert hd["verdict"] == "improves" and hd["unit"] == "mm" and hd["effect"] == pytest.approx(-2.0)


def test_first_screen_has_one_line_per_arm_with_verdict_mde_and_claims(make_rows, sizes):
    sig = _significance(_both_metrics(make_rows), sizes, arms=["real+never_ran"])
    html = first_screen(sig, _quality(), None)
    rows = re.findall(r"<tr><td class=\"text nw\"><b>(.*?)</b>", html)
    assert rows == ["real+never_ran", *ARMS]  # configured arm first, then the arms in the rows' order
    same = sig[(sig["scope"] == "pooled") & (sig["arm"] == "real+labels2image") & (sig["metric"] == "dice")].iloc[0]
    assert same["verdict"] == "no evidence"
    assert f"no evidence</span> of a gain larger than {100 * same['mde']:.1f} points" in html
    assert '<span class="improves">improves</span>' in html and '<span class="worse">worse</span>' in html
    assert "not tested</span>: no per-case &#x27;dice&#x27; rows for arm &#x27;real+never_ran&#x27;" in html
    assert "of 4 arms, 1 improves, 1 shows no evidence of a change, 1 is worse, 1 could not be tested" in html
    # claims: the gain arm wins on 5 of 5 splits (no amber), the loss arm on none
    assert '<td class="num nw">5 of 5</td>' in html and '<td class="num nw">0 of 5</td>' in html


def test_table1_paper_columns_then_fidelity_then_other_realism():
    t1 = table1(_quality())
    order = ["fid", "kid", "mmd", "ms_ssim", "psnr", "dice_cavity", "c2st_auc", "realism_auc"]
    assert list(dict.fromkeys(t1["metric"])) == order
    labels = dict(zip(t1["metric"], t1["label"], strict=False))
    assert labels["ms_ssim"] == "MS-SSIM" and labels["dice_cavity"] == "mask Dice cavity"
    html = first_screen(None, _quality(), None)
    assert "FID, KID, MMD, ... on <code>r3d18</code> features" in html  # the backbone named in the header
    # C2ST AUC: closer to chance (0.5) is better, so the lower is bold
    assert "<th>C2ST AUC ↓</th>" in html and "<b>0.650 ± 0.010</b>" in html and ">0.750 ± 0.010<" in html
    assert "<th>KID ×10³ ↓</th>" in html and "<th>PSNR (dB) ↑</th>" in html and "<th>realism_auc</th>" in html
    # best per column in bold (FID: lower, PSNR: higher); KID shown x10^3 (0.004 -> 4.00, sd 0.0002 -> 0.20)
    assert "<b>1.00 ± 0.01</b>" in html and "2.00 ± 0.01" in html and "<b>2.00 ± 0.01</b>" not in html
    assert "<b>4.00 ± 0.20</b>" in html and ">5.00 ± 0.20<" in html
    assert "<b>16.00 ± 0.01</b>" in html and ">15.00 ± 0.01<" in html
    assert ">0.600 ± 0.010<" in html and "<b>0.700 ± 0.010</b>" not in html  # realism_auc: no known direction
    assert "memorisation" not in html and "c2st_prob" not in html and html.count("MS-SSIM") == 1


def test_forest_plot_draws_every_arm_and_needs_split_rows(tmp_path, make_rows, sizes):
    sig = _significance(_both_metrics(make_rows), sizes)
    out = plot_forest(sig, tmp_path / "forest")
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out["svg"].is_file()
    svg = out["svg"].read_text()
    for arm in ARMS:
        assert arm in svg
    with pytest.raises(DataError, match="no per-split 'dice' differences"):
        plot_forest(sig[sig["scope"] == "pooled"], tmp_path / "none")


def test_report_opens_with_the_answer_then_the_details(tmp_path, make_rows, sizes):
    rows = _both_metrics(make_rows)
    out = build_report(tmp_path / "report.html", seg_rows=rows, quality_rows=None, split_sizes=sizes,
                       config_text="name: t\n", manifest_digest="m", code_version="v")  # fmt: skip
    text = out.read_text()
    order = [text.index(s) for s in ('class="answer"', 'alt="forest plot', "Table 1", "<h2>Provenance</h2>",
                                     "<h2>Segmentation: significance")]  # fmt: skip
    assert order == sorted(order)
    assert (tmp_path / "report_files" / "forest_dice.png").is_file()
    assert "Table 1: no image-quality results." in text
    assert np.isfinite(pd.read_csv(tmp_path / "report_files" / "significance.csv")["mde"]).sum() == 6


def test_summary_sentence_counts_verdicts_in_number(make_rows, sizes):
    html = first_screen(_significance(make_rows({"real+a": 0.05, "real+b": 0.05}), sizes), None, None)
    assert "of 2 arms, 2 improve, 0 show no evidence of a change, 0 are worse</b>" in html
