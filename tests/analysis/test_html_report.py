"""The HTML report: self-contained, carries the tables and provenance, and explains every missing input."""

from __future__ import annotations

import importlib.util
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from benchmark.analysis.report import build_report, config_digest, write_report
from benchmark.analysis.significance import significance_table

CONFIG = "name: tiny\nsplits:\n  n_splits: 5\n  protocol: disjoint_pool\n"
ROOT = Path(__file__).resolve().parents[2]


class _Refs(HTMLParser):
    """Collects every src/href and the tags seen."""

    def __init__(self):
        super().__init__()
        self.refs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v is not None]


def _parse(path: Path) -> _Refs:
    parser = _Refs()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_report_is_self_contained_with_tables_and_provenance(tmp_path, three_arms, sizes):
    out = build_report(
        tmp_path / "report.html",
        seg_rows=three_arms,
        quality_rows=None,
        split_sizes=sizes,
        config_text=CONFIG,
        manifest_digest="ab" * 32,
        code_version="lge-synthbench 9.9",
        k_scores=pd.DataFrame({"k": [2, 3], "silhouette": [0.3, 0.4], "davies_bouldin": [1.0, 0.9]}),
    )
    refs = _parse(out)
    assert refs.refs, "figures should be embedded"
    assert all(r.startswith("data:image/png;base64,") for r in refs.refs)
    assert not {"link", "script", "iframe"} & set(refs.tags)
    text = out.read_text()
    assert config_digest(CONFIG) in text and "ab" * 32 in text and "lge-synthbench 9.9" in text
    assert text.count("<table>") >= 3  # significance (pooled + per split) and segmentation
    for arm in ("real+good", "real+same", "real+bad"):
        assert arm in text
    assert '<td class="text improves">improves</td>' in text and '<td class="text worse">worse</td>' in text
    assert "disjoint_pool" in text and "LEAKY" not in text
    assert "No image-quality results" in text
    files = tmp_path / "report_files"
    assert {p.name for p in files.iterdir()} >= {"significance.csv", "segmentation.tex", "dice_per_arm.png", "k.svg"}


def test_set_level_notes_are_one_line_of_the_report(tmp_path, three_arms, sizes):
    note = "FID from 6 samples of 512-dimensional features: the covariances are rank-deficient"
    sets = pd.DataFrame(
        [dict(study="t", split=s, seed=0, generator="spade_ldm", arm=None, case_id=None, metric=m, value=v,
              reason=None, backbone="r10", ci_low=v - 1, ci_high=v + 1, n=6, note=note if m == "fid" else None)
         for s in range(5) for m, v in (("fid", 30.0 + s), ("kid", 0.1))]
    )  # fmt: skip
    out = build_report(
        tmp_path / "report.html",
        seg_rows=three_arms,
        quality_rows=sets,
        split_sizes=sizes,
        config_text=CONFIG,
        manifest_digest="m",
        code_version="v",
        notes=["a caller's note"],
    )
    text = out.read_text()
    assert text.count("rank-deficient") == 1
    assert f'<div class="msg">Image quality: fid in 5 of 5 run(s): {note}</div>' in text
    assert text.index("a caller&#x27;s note") < text.index("Image quality: fid")


def test_empty_experiment_gives_messages_not_a_crash(tmp_path, sizes):
    out = build_report(
        tmp_path / "r.html",
        seg_rows=pd.DataFrame(),
        quality_rows=None,
        split_sizes=sizes,
        config_text="",
        manifest_digest=None,
        code_version=None,
    )
    text = out.read_text()
    assert "No per-case segmentation rows" in text
    assert "no per-case &#x27;dice&#x27; rows for any arm" in text
    assert "Figure &#x27;Dice per arm&#x27; not drawn" in text
    assert "No config sha256 was given" in text and "The configuration text is missing" in text


def test_short_split_missing_rows_and_leaky_protocol_are_flagged(tmp_path, make_rows, sizes):
    rows = make_rows({"real+spade_ldm": 0.03})
    rows = rows[~((rows["split"] == 2) & (rows["case_id"] > "c2_2"))]
    sig = significance_table(rows, sizes, arms=["real+pix2pix3d"])
    out = write_report(
        tmp_path / "r.html",
        config_text="splits:\n  protocol: shared\n",
        manifest_digest="m",
        code_version="v",
        quality_summary=None,
        seg_rows=rows,
        significance=sig,
        figures={"absent figure": tmp_path / "nope.png"},
    )
    text = out.read_text()
    assert "LEAKY" in text
    assert "split 2, arm(s) real+spade_ldm: 3 paired cases &lt; minimum 5" in text
    assert "real+pix2pix3d: no per-case &#x27;dice&#x27; rows for arm" in text
    assert "Figure &#x27;absent figure&#x27; is missing" in text


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"analysis_{name}", ROOT / "analysis" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scripts_run_from_a_folder_of_csvs(tmp_path, three_arms, capsys):
    rows_dir = tmp_path / "rows"
    rows_dir.mkdir()
    for arm, grp in three_arms.groupby("arm"):
        grp.to_csv(rows_dir / f"{arm.replace('+', '_')}.csv", index=False)
    pd.DataFrame({"split": range(5), "n_train": 28, "n_test": 12}).to_csv(tmp_path / "sizes.csv", index=False)
    (tmp_path / "config.yaml").write_text(CONFIG)
    sig = _script("significance")
    assert (
        sig.main(
            ["--rows", str(rows_dir), "--split-sizes", str(tmp_path / "sizes.csv"), "--out", str(tmp_path / "sig")]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| real+good |" in printed and "improves" in printed and "worse" in printed
    assert (tmp_path / "sig.tex").is_file()
    rep = _script("report")
    assert (
        rep.main(
            [
                "--rows",
                str(rows_dir),
                "--split-sizes",
                str(tmp_path / "sizes.csv"),
                "--config",
                str(tmp_path / "config.yaml"),
                "--out",
                str(tmp_path / "rep.html"),
            ]
        )
        == 0
    )
    assert config_digest(CONFIG) in (tmp_path / "rep.html").read_text()


def test_script_bad_path_is_one_line_error(tmp_path, capsys):
    from benchmark.run.cli import main_guard

    sig = _script("significance")
    code = main_guard(lambda: sig.main(["--rows", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing: no such file or folder" in err and "\n" not in err


@pytest.mark.parametrize("protocol", ["per_split", "shared"])
def test_protocol_argument_overrides_config(tmp_path, protocol):
    out = write_report(
        tmp_path / "p.html",
        config_text=CONFIG,
        manifest_digest="m",
        code_version="v",
        quality_summary=None,
        seg_rows=None,
        significance=None,
        protocol=protocol,
    )
    assert ("LEAKY" in out.read_text()) == (protocol == "shared")
