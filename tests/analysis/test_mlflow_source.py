"""Reading a study back from MLflow (sqlite store): frames equal what was logged, and bad stores fail clearly."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.analysis.mlflow_source import read_study, read_study_frames
from benchmark.errors import DataError, TrackingError
from benchmark.results import COLUMNS
from benchmark.tracking.tracker import MLflowTracker, default_uri, ensure_experiment

ROOT = Path(__file__).resolve().parents[2]
CASES = {0: ["p03", "p05", "p08"], 1: ["p01", "p04", "p07"]}


def _seg_rows(split: int, arm: str, offset: float) -> pd.DataFrame:
    gen = arm.removeprefix("real+") if arm != "real" else ""
    rows = []
    for i, case in enumerate(CASES[split]):
        dice = 0.70 + 0.05 * i + 0.01 * split + offset
        rows.append(["toy", split, 0, gen, arm, case, "dice", round(dice, 4), "", ""])
        rows.append(["toy", split, 0, gen, arm, case, "hd95", round(9.0 - 10 * offset + i, 3), "", ""])
    rows.append(["toy", split, 0, gen, arm, CASES[split][0], "assd", np.nan, "empty prediction", ""])
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _log(uri: str, exp: str, name: str, tags: dict, files: dict[str, str], tmp: Path, parent=None, status="FINISHED"):
    tracker = MLflowTracker(uri, exp, name, {"job_key": name, **tags}, parent)
    folder = tmp / name.replace("/", "_")
    folder.mkdir(parents=True)
    for fname, text in files.items():
        (folder / fname).write_text(text)
        tracker.log_artifact(folder / fname)
    tracker.log_metrics({"job_seconds": 1.5})
    tracker.end(status)
    return tracker.run_id


def _log_study(uri: str, exp: str, tmp: Path, *, splits_json: bool = True, drop_per_case: str | None = None):
    """A two-split study; returns what was logged as the frames a reader should get back."""
    plan = {"protocol": "per_split", "seed": 0, "splits": [
        {"index": s, "train_patients": [], "test_patients": [], "train_cases": [f"t{s}{k}" for k in range(6)],
         "test_cases": CASES[s]} for s in (0, 1)]}  # fmt: skip
    files = {"splits.json": json.dumps(plan)} if splits_json else {}
    parent = _log(uri, exp, "sweep/toy", {"kind": "sweep"}, files, tmp / "parent")
    _log(uri, exp, "gen/split0/spade_ldm/seed0", {"kind": "generator"}, {}, tmp, parent)
    # an older finished run of the same job, superseded by the one logged below
    _log(uri, exp, "seg/split0/seed0/real", {"kind": "segmentation", "split": 0, "seed": 0, "arm": "real"},
         {"per_case.csv": _seg_rows(0, "real", -0.5).to_csv(index=False)}, tmp / "old", parent)  # fmt: skip
    _log(uri, exp, "seg/split1/seed0/real+pix2pix3d", {"kind": "segmentation"}, {}, tmp, parent, status="FAILED")
    # (no arm tag on that one: the arm then comes from the run name)
    seg, arms = [], []
    for split in (0, 1):
        for arm in ("real", "real+spade_ldm"):
            name = f"seg/split{split}/seed0/{arm}"
            rows = _seg_rows(split, arm, 0.02 if arm != "real" else 0.0)
            record = {"arm": arm, "split": split, "train_seed": 0, "n_real": 6, "n_synthetic": 6 * (arm != "real"),
                      "n_augmented": 0}  # fmt: skip
            files = {"per_case.csv": rows.to_csv(index=False), "arm.json": json.dumps(record)}
            if name == drop_per_case:
                del files["per_case.csv"]
            else:
                seg.append(rows)
                arms.append(record)
            tags = {"kind": "segmentation", "split": split, "seed": 0, "arm": arm, "generator": rows.generator[0]}
            _log(uri, exp, name, tags, files, tmp, parent)
    job = {"study": "toy", "split": 0, "seed": 0, "generator": "spade_ldm"}
    q_case = pd.DataFrame({"case_id": ["t00", "t01"], "metric": ["psnr", "psnr"], "value": [21.5, 23.0],
                           "backbone": ["", ""], "arm": "", "reason": "", **job})[list(COLUMNS)]  # fmt: skip
    summary = {"fid": {"value": 12.5, "ci_low": 10.0, "ci_high": 15.0, "n": 6, "backbone": "resnet34_random",
                       "note": "FID from 6 samples of 512-dimensional features"},
               "psnr": {"value": 22.25, "ci_low": 21.5, "ci_high": 23.0, "n": 2, "backbone": None}}  # fmt: skip
    # tags that disagree with the rows: the reader takes the rows' own columns, never the tags
    _log(uri, exp, "quality/split0/spade_ldm/seed0",
         {"kind": "quality", "split": 9, "seed": 9, "generator": "tag_only", "backbone": "resnet34_random"},
         {"per_case.csv": q_case.to_csv(index=False),
          "summary.json": json.dumps({**job, "arm": "", "metrics": summary})}, tmp, parent)  # fmt: skip
    return pd.concat(seg, ignore_index=True), arms, q_case, summary


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating it costs a few seconds); one experiment per scenario."""
    tmp = tmp_path_factory.mktemp("mlflow")
    return default_uri(tmp), tmp


def _experiment(store, name: str):
    uri, tmp = store
    return uri, ensure_experiment(uri, name, tmp / name / "artifacts"), tmp / name


def test_frames_equal_what_was_logged(store):
    uri, exp, tmp = _experiment(store, "full")
    seg, arms, q_case, summary = _log_study(uri, exp, tmp)
    study = read_study(uri, "full")
    f = study.frames

    # per-case segmentation rows, as a CSV round trip gives them
    expected = pd.read_csv(_roundtrip(seg, tmp))
    assert list(f.seg.columns) == list(COLUMNS)
    assert set(f.seg.study) == {"toy"}
    order = ["split", "arm", "case_id", "metric"]
    got = f.seg.sort_values(order).reset_index(drop=True)
    # dtypes differ only in how pandas stores text (object vs string) after concatenation
    pd.testing.assert_frame_equal(got, expected.sort_values(order).reset_index(drop=True), check_dtype=False)
    # the newer run of seg/split0/seed0/real wins over the superseded one (offset -0.5 would give dice ~0.2)
    real0 = f.seg[(f.seg.split == 0) & (f.seg.arm == "real") & (f.seg.metric == "dice")]
    assert real0.value.tolist() == [0.70, 0.75, 0.80]

    sizes = f.split_sizes.sort_values("split").reset_index(drop=True)
    assert sizes.to_dict("records") == [
        {"split": 0, "n_train": 6, "n_test": 3},
        {"split": 1, "n_train": 6, "n_test": 3},
    ]
    key = ["split", "arm"]
    assert sorted(f.arms.to_dict("records"), key=lambda r: [r[k] for k in key]) == sorted(
        arms, key=lambda r: [r[k] for k in key])  # fmt: skip

    per_case = f.quality[f.quality.case_id.notna()]
    assert per_case[["case_id", "value"]].values.tolist() == [["t00", 21.5], ["t01", 23.0]]
    assert set(per_case.split) == {0} and set(per_case.generator) == {"spade_ldm"} and set(per_case.seed) == {0}
    assert set(per_case.study) == {"toy"}
    dist = f.quality[f.quality.case_id.isna()].set_index("metric")
    assert dist.loc["fid", ["value", "ci_low", "ci_high", "n"]].tolist() == [12.5, 10.0, 15.0, 6]
    fid_keys = dist.loc["fid", ["backbone", "split", "seed", "generator"]].tolist()
    assert fid_keys == ["resnet34_random", 0, 0, "spade_ldm"]
    assert dist.loc["psnr", "value"] == summary["psnr"]["value"]
    # the FID's note becomes one line of the study's notes
    assert [n for n in study.notes if "512-dimensional" in n] == [
        "Image quality: fid in 1 of 1 run(s): FID from 6 samples of 512-dimensional features"
    ]

    assert sorted(study.runs) == sorted([f"seg/split{s}/seed0/{a}" for s in (0, 1) for a in ("real", "real+spade_ldm")]
                                        + ["quality/split0/spade_ldm/seed0"])  # fmt: skip
    text = " ".join(study.notes)
    assert "seg/split1/seed0/real+pix2pix3d" in text and "FAILED" in text  # unfinished job listed
    assert "superseded" in text and "seg/split0/seed0/real" in text


def _roundtrip(frame: pd.DataFrame, tmp: Path) -> Path:
    path = tmp / "expected_seg.csv"
    frame.to_csv(path, index=False)
    return path


def test_split_sizes_without_splits_json(store):
    uri, exp, tmp = _experiment(store, "nosplits")
    _log_study(uri, exp, tmp, splits_json=False)
    study = read_study(uri, "nosplits")
    sizes = study.frames.split_sizes.sort_values("split")
    assert sizes[["split", "n_train", "n_test"]].values.tolist() == [[0, 6, 3], [1, 6, 3]]
    assert any("no parent run with splits.json" in n for n in study.notes)


def test_experiment_without_runs_is_a_clear_error(store):
    uri, _, _ = _experiment(store, "empty")
    with pytest.raises(DataError, match="'empty'.*holds no runs"):
        read_study_frames(uri, "empty")


def test_run_missing_per_case_is_named(store):
    uri, exp, tmp = _experiment(store, "holes")
    missing = "seg/split1/seed0/real+spade_ldm"
    seg, *_ = _log_study(uri, exp, tmp, drop_per_case=missing)
    with pytest.raises(DataError, match="1 finished run.*lack their per-case artifacts") as err:
        read_study(uri, "holes")
    assert missing in str(err.value) and "per_case.csv" in str(err.value)
    study = read_study(uri, "holes", allow_missing=True)
    assert [r.name for r, _ in study.missing] == [missing]
    assert len(study.frames.seg) == len(seg)  # the other three runs are all there
    assert not ((study.frames.seg.split == 1) & (study.frames.seg.arm == "real+spade_ldm")).any()


def test_unknown_experiment_and_missing_store(store, tmp_path):
    uri, _, _ = _experiment(store, "known")
    with pytest.raises(TrackingError, match="no experiment 'nope'.*known"):
        read_study(uri, "nope")
    absent = tmp_path / "nowhere" / "mlflow.db"
    with pytest.raises(TrackingError, match="no MLflow store"):
        read_study(f"sqlite:///{absent}", "x")
    assert not absent.exists()  # reading never creates an empty store


def _aggregate():
    spec = importlib.util.spec_from_file_location("analysis_aggregate", ROOT / "analysis" / "aggregate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_aggregate_script_writes_tables(store, tmp_path, capsys):
    from benchmark.run.cli import main_guard

    uri, exp, tmp = _experiment(store, "agg")
    _log_study(uri, exp, tmp)
    out = tmp_path / "tables"
    code = main_guard(lambda: _aggregate().main(["--experiment", "agg", "--tracking-uri", uri, "--out", str(out),
                                                 "--n-boot", "200"]))  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.err
    for stem in ("segmentation", "quality", "significance"):
        assert {p.suffix for p in out.glob(f"{stem}.*")} == {".csv", ".md", ".tex"}
    seg = pd.read_csv(out / "segmentation.csv")
    pooled = seg[(seg.split == "all") & (seg.metric == "dice")].set_index("arm")["mean"]
    assert pooled["real"] == pytest.approx(np.mean([0.70, 0.75, 0.80, 0.71, 0.76, 0.81]))
    assert pooled["real+spade_ldm"] - pooled["real"] == pytest.approx(0.02)
    assert pd.read_csv(out / "quality.csv").set_index("metric").loc["fid", "mean"] == 12.5
    sig = pd.read_csv(out / "significance.csv").set_index("arm")
    # the failed arm keeps its row, with the reason, instead of vanishing from the comparison
    assert sorted(sig[sig.scope == "pooled"].index) == ["real+pix2pix3d", "real+spade_ldm"]
    assert sig.loc["real+pix2pix3d", "verdict"] == "not tested" and "no" in sig.loc["real+pix2pix3d", "reason"]
    assert "experiment agg" in printed.out and "real+spade_ldm" in printed.out
    assert "seg/split1/seed0/real+pix2pix3d" in printed.err  # the failed run is reported, not dropped silently


def test_aggregate_script_exit_code_2(store, tmp_path, capsys):
    from benchmark.run.cli import main_guard

    uri, exp, tmp = _experiment(store, "agg_holes")
    _log_study(uri, exp, tmp, drop_per_case="seg/split0/seed0/real")
    args = ["--experiment", "agg_holes", "--tracking-uri", uri, "--out", str(tmp_path / "t")]
    assert main_guard(lambda: _aggregate().main(args)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: experiment 'agg_holes'") and "seg/split0/seed0/real (run " in err
    _experiment(store, "agg_empty")
    assert main_guard(lambda: _aggregate().main(["--experiment", "agg_empty", "--tracking-uri", uri])) == 2
    assert "holds no runs" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()  # nothing partial written


def _log_variant(uri: str, exp: str, tmp: Path, root: Path, offset: float, seg_hash: str) -> pd.DataFrame:
    """One variant of study ``toy``: its folder's job records and its runs (the generator run is shared: the
    variants differ in the segmentation section only, so its hash is the same)."""
    from benchmark.run.state import JobRecord, StudyState

    hashes = {"gen/split0/spade_ldm/seed0": "g0", **{f"seg/split0/seed0/{a}": f"{seg_hash}-{a}"
                                                    for a in ("real", "real+spade_ldm")}}  # fmt: skip
    StudyState(root).update(JobRecord(key=k, kind=k.split("/")[0], cfg_hash=h) for k, h in hashes.items())
    plan = {"protocol": "per_split", "seed": 0, "splits": [{"index": 0, "train_patients": [], "test_patients": [],
            "train_cases": ["t0", "t1"], "test_cases": CASES[0]}]}  # fmt: skip
    parent = _log(uri, exp, "sweep/toy", {"kind": "sweep"}, {"splits.json": json.dumps(plan)}, tmp / "parent")
    _log(uri, exp, "gen/split0/spade_ldm/seed0", {"kind": "generator", "config_hash": "g0"}, {}, tmp / "gen", parent)
    rows = []
    for arm in ("real", "real+spade_ldm"):
        frame = _seg_rows(0, arm, offset)
        rows.append(frame)
        tags = {
            "kind": "segmentation",
            "split": 0,
            "seed": 0,
            "arm": arm,
            "config_hash": hashes[f"seg/split0/seed0/{arm}"],
        }
        _log(uri, exp, f"seg/split0/seed0/{arm}", tags, {"per_case.csv": frame.to_csv(index=False)}, tmp, parent)
    return pd.concat(rows, ignore_index=True)


def test_variants_in_one_experiment_never_mix(store, tmp_path, capsys):
    """Two variants of one study (same name, other segmentation config) log to one experiment: each reads only its
    own runs, by the config hashes its study folder recorded; read without them, the mix is pointed out."""
    from benchmark.analysis.mlflow_source import study_config_hashes
    from benchmark.run.cli import main_guard

    uri, exp, tmp = _experiment(store, "variants")
    a = _log_variant(uri, exp, tmp / "a", tmp_path / "a", 0.0, "hash-a")
    b = _log_variant(uri, exp, tmp / "b", tmp_path / "b", -0.4, "hash-b")  # newer: would win without the filter
    for root, rows in ((tmp_path / "a", a), (tmp_path / "b", b)):
        study = read_study(uri, "variants", config_hashes=study_config_hashes(root))
        got = study.frames.seg.sort_values(["arm", "case_id", "metric"]).value.tolist()
        assert got == pytest.approx(rows.sort_values(["arm", "case_id", "metric"]).value.tolist(), nan_ok=True)
        assert {r.tags["config_hash"] for r in study.runs.values()} == {"hash-a-real", "hash-a-real+spade_ldm"} \
            if root.name == "a" else {"hash-b-real", "hash-b-real+spade_ldm"}  # fmt: skip
        assert any("2 job run(s) of another config" in n for n in study.notes)
        # the other variant's runs are no "older re-runs" (its shared generator run, same hash, may be)
        assert not any("superseded" in n and "seg/" in n for n in study.notes)
    mixed = read_study(uri, "variants")  # no study folder: newest per job key, and a note on the mix
    assert any("several config hashes" in n and "seg/split0/seed0/real" in n for n in mixed.notes)
    with pytest.raises(DataError, match="state/jobs.json: not found"):
        study_config_hashes(tmp_path / "nowhere")
    out = tmp_path / "tables"
    args = ["--experiment", "variants", "--tracking-uri", uri, "--study", str(tmp_path / "a"), "--out", str(out),
            "--n-boot", "50"]  # fmt: skip
    assert main_guard(lambda: _aggregate().main(args)) == 0, capsys.readouterr().err
    seg = pd.read_csv(out / "seg_rows.csv")
    assert seg[seg.metric == "dice"].value.max() < 0.9 and seg[seg.metric == "dice"].value.min() > 0.6  # only a's
