"""The report's robustness section: Dice/HD95-vs-severity curves per shift family, each arm against real under
every shift with the main table's corrected tests, and one verdict line per arm and shift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark import results
from benchmark.analysis.report import build_report
from benchmark.analysis.robustness import shift_significance, verdict_lines

SPLITS, CASES = 5, 8
SIZES = pd.DataFrame({"split": range(SPLITS), "n_train": 20, "n_test": CASES})


def _rows(shift: str | None, severity: int, gain: float, rng: np.random.Generator) -> list[dict]:
    """Per-case Dice and HD95 of three arms: ``real+x`` gains ``gain`` Dice over real, ``real+y`` nothing."""
    out = []
    for split in range(SPLITS):
        for case in range(CASES):
            base = 0.85 - 0.05 * severity + rng.normal(0, 0.02)
            for arm, delta in (("real", 0.0), ("real+x", gain), ("real+y", 0.0)):
                dice = base + delta + rng.normal(0, 0.005)
                key = {"study": "s", "split": split, "seed": 0, "generator": "", "arm": arm, "case_id": f"c{case}"}
                for metric, value in (("dice", dice), ("hd95", 10.0 * (1.0 - dice))):
                    row = {**key, "metric": metric, "value": value, "reason": "", "backbone": ""}
                    out.append(row if shift is None else {**row, "shift": shift, "severity": severity})
    return out


def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    seg = pd.DataFrame(_rows(None, 0, 0.0, rng), columns=list(results.COLUMNS))
    shifted = _rows("noise", 1, 0.0, rng) + _rows("noise", 2, 0.06, rng) + _rows("site", 1, 0.0, rng)
    return seg, pd.DataFrame(shifted, columns=list(results.SHIFT_COLUMNS))


def test_each_arm_is_tested_against_real_under_every_shift_and_severity():
    _, robust = _frames()
    sig = shift_significance(robust, SIZES)
    pooled = sig[(sig.scope == "pooled") & (sig.metric == "dice")].set_index(["shift", "severity", "arm"])
    assert pooled.loc[("noise", 2, "real+x"), "verdict"] == "improves"
    assert pooled.loc[("noise", 2, "real+x"), "mean_diff"] == pytest.approx(0.06, abs=0.01)
    assert pooled.loc[("noise", 1, "real+x"), "verdict"] == "no evidence"
    assert (pooled.xs("real+y", level="arm")["verdict"] == "no evidence").all()
    assert len(pooled) == 3 * 2  # (noise 1, noise 2, site 1) x two arms against real
    lines = verdict_lines(sig)
    assert "real+x under noise: no evidence at severity 1; improves at severity 2 (Dice vs real, points: s1 " in (
        "\n".join(lines)
    )
    assert any(line.startswith("real+y under site: no evidence (Dice vs real, points: ") for line in lines)


def test_the_report_shows_the_curves_and_the_per_shift_significance(tmp_path):
    seg, robust = _frames()
    out = build_report(
        tmp_path / "report.html", seg_rows=seg, quality_rows=None, split_sizes=SIZES, config_text="name: s\n",
        manifest_digest="m", code_version="c", robust_rows=robust,
    )  # fmt: skip
    html = out.read_text()
    start = html.index("<h2>Robustness under distribution shift</h2>")
    section = html[start : html.index("<h2>", start + 4)]
    assert "Dice and HD95 against severity: noise" in section and "Dice and HD95 against severity: site" in section
    assert section.count("data:image/png;base64,") == 2
    assert "real+x under noise: no evidence at severity 1; improves at severity 2" in section
    assert (tmp_path / "report_files" / "robustness_noise.svg").is_file()
    table = pd.read_csv(tmp_path / "report_files" / "robustness_significance.csv")
    assert len(table) == 3 * 2 * 2  # shift points x arms x (dice, hd95)
    hd95 = table[(table.metric == "hd95") & (table["shift"] == "noise") & (table.severity == 2)]
    assert set(hd95.loc[hd95.arm == "real+x", "verdict"]) == {"improves"}  # lower HD95 is better
    # a study without robustness rows has no such section
    plain = build_report(
        tmp_path / "plain.html", seg_rows=seg, quality_rows=None, split_sizes=SIZES, config_text="name: s\n",
        manifest_digest="m", code_version="c",
    )  # fmt: skip
    assert "Robustness under distribution shift" not in plain.read_text()
