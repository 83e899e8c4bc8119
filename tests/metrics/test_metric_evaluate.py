"""The evaluation job and its launcher on tiny volumes; the registry contract."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from benchmark.config import MetricsConfig
from benchmark.data.io import save_nifti
from benchmark.errors import ConfigError, DataError
from benchmark.metrics import METRICS
from benchmark.metrics.evaluate import evaluate_generator
from benchmark.results import COLUMNS
from benchmark.run.cli import main_guard
from launchers.evaluate_generator import main

SHAPE = (16, 16, 16)
CFG = MetricsConfig(
    backbone="resnet10",
    kid_subsets=5,
    kid_subset_size=3,
    fixed_n=4,
    fixed_n_draws=3,
    bootstrap=10,
    msssim_kernel=(3, 3, 3),
)


def _data(n=6, seed=0):
    rng = np.random.default_rng(seed)
    real = {f"c{i}": rng.random(SHAPE, dtype=np.float32) for i in range(n)}
    syn = {k: v + 0.1 * rng.standard_normal(SHAPE).astype(np.float32) for k, v in real.items()}
    labels = {k: np.where(v > 0.8, 1, np.where(v > 0.6, 2, 0)) for k, v in real.items()}
    return real, syn, labels


def _segment(vol: np.ndarray) -> np.ndarray:
    return np.where(vol > 0.8, 1, np.where(vol > 0.6, 2, 0))


def test_registry_lines_are_the_config_choices():
    assert set(METRICS) == set(MetricsConfig().metrics)


def test_evaluate_generator_rows_summary_and_files(tmp_path):
    real, syn, labels = _data()
    job = {"study": "s", "split": 1, "seed": 2, "generator": "spade_ldm"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FID from 6 cases of 512-d features: a note in the summary, no warning
        frame, summary = evaluate_generator(
            real, syn, labels, real, CFG, cache_dir=tmp_path / "cache", segment_fn=_segment, out_dir=tmp_path / "out",
            job=job,
        )  # fmt: skip
    assert list(frame.columns) == list(COLUMNS)
    keys = frame[["study", "split", "seed", "generator"]].drop_duplicates().values.tolist()
    assert keys == [["s", 1, 2, "spade_ldm"]]
    assert set(frame.arm) == {""} and set(frame.reason) == {""}
    per_metric = frame.groupby("metric").size().to_dict()
    assert per_metric == {
        m: 6
        for m in (
            "psnr", "ms_ssim", "dice_cavity", "dice_wall", "nn_distance_feature", "nn_distance_voxel",
            "c2st_prob_synthetic",
        )
    }  # fmt: skip
    assert set(frame.loc[frame.metric == "nn_distance_feature", "backbone"]) == {"random_resnet10_seed0"}
    for key in ("fid", "fid_at_n", "kid", "kid_at_n", "mmd", "mmd_rbf", "memorisation_fraction_feature", "c2st_auc"):
        assert summary[key]["backbone"] == "random_resnet10_seed0", key
        assert {"value", "ci_low", "ci_high", "n"} <= set(summary[key])
    assert summary["fid"]["n"] == 6 and summary["fid_at_n"]["n"] == 4
    assert summary["fid"]["note"].startswith("FID from 6 samples of 512-dimensional features: the covariances are")
    assert "note" not in summary["kid"]
    assert summary["psnr_mean"]["value"] == pytest.approx(frame[frame.metric == "psnr"].value.mean())
    # synthetic = real + noise: every synthetic volume sits right next to its own source
    assert summary["memorisation_fraction_voxel"]["value"] == 1.0
    assert summary["memorisation_fraction_voxel"]["nearest_train"] == {k: k for k in syn}
    written = pd.read_csv(tmp_path / "out" / "per_case.csv", keep_default_na=False, na_values=[""])
    assert list(written.columns) == list(COLUMNS) and len(written) == len(frame)
    np.testing.assert_array_equal(written["value"].to_numpy(), frame["value"].to_numpy())
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["metrics"]["kid"]["n"] == 6 and {k: on_disk[k] for k in job} == job and on_disk["arm"] == ""
    # same inputs and seed -> identical numbers (features now come from the cache)
    _, again = evaluate_generator(real, syn, labels, real, CFG, cache_dir=tmp_path / "cache", segment_fn=_segment)
    assert again["fid"] == summary["fid"] and again["kid"] == summary["kid"]


def test_evaluate_generator_bad_input(tmp_path):
    real, syn, labels = _data(4)
    with pytest.raises(ConfigError, match="metrics.metrics: unknown \\['lpips'\\]"):
        evaluate_generator(real, syn, labels, real, MetricsConfig(metrics=("lpips",)), cache_dir=None)
    with pytest.raises(ConfigError, match="mask_fidelity needs a segmenter"):
        evaluate_generator(real, syn, labels, real, MetricsConfig(metrics=("mask_fidelity",)), cache_dir=None)
    with pytest.raises(DataError, match="no real volume for 1 synthetic case"):
        evaluate_generator({}, {"x": syn["c0"]}, {}, {}, MetricsConfig(metrics=("psnr",)), cache_dir=None)
    syn["c2"] = syn["c2"].copy()
    syn["c2"][0, 0, 0] = np.nan
    with pytest.raises(DataError, match="case c2: volume holds 1 NaN"):
        evaluate_generator(real, syn, labels, real, MetricsConfig(metrics=("ms_ssim",)), cache_dir=None)


def test_launcher_on_nifti_folders(tmp_path, capsys):
    real, syn, _ = _data(5)
    for folder, vols in (("real", real), ("syn", syn)):
        for cid, v in vols.items():
            save_nifti(tmp_path / folder / f"{cid}.nii.gz", v, np.eye(4))
    overrides = ["metrics.backbone=resnet10", "metrics.bootstrap=5", "metrics.kid_subset_size=3", "metrics.fixed_n=3"]
    args = ["--real", str(tmp_path / "real"), "--synthetic", str(tmp_path / "syn"), "--out", str(tmp_path / "o")]
    args += ["--cache-dir", str(tmp_path / "cache"), *overrides, "metrics.msssim_kernel=[3,3,3]"]
    assert main_guard(lambda: main(args)) == 0
    captured = capsys.readouterr()
    assert "mask_fidelity skipped" in captured.err
    assert json.loads(captured.out)["fid"]["backbone"] == "random_resnet10_seed0"
    assert set(pd.read_csv(tmp_path / "o" / "per_case.csv").case_id) == set(real)
    # a too-small volume for the default MS-SSIM kernel: one line on stderr, exit code 2
    assert main_guard(lambda: main(args[:-1] + ["metrics.metrics=[ms_ssim]"])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: case c0:") and "minimum size is (20, 20, 12)" in err and "\n" not in err
