"""Robustness jobs on a finished tiny study: a row for every arm x shift x severity, skipped on a re-run, logged to
MLflow; a bad external test set stops with one line before the study is touched."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from study_fixtures import tiny_study_overrides

from benchmark import results
from benchmark.config import PhantomConfig, load_config
from benchmark.config.sections import ShiftFamily
from benchmark.data.phantom import generate_phantom
from benchmark.errors import ConfigError
from benchmark.robustness import CORRUPTIONS
from benchmark.robustness.shifts import check_families, clean_cases, shifted_sets
from benchmark.run.cli import main_guard
from benchmark.run.robustness import main as robustness_main
from benchmark.run.sweep import main as sweep_main
from benchmark.study import Study

ARMS = ("real", "real+labels2image")
N_EXTERNAL = 3


def _external(folder: Path, broken: str = "") -> Path:
    """An nnU-Net-layout external set: phantom scans of another seed; ``broken`` spoils the last case."""
    man = generate_phantom(PhantomConfig(n_patients=N_EXTERNAL, scans_per_patient=(1, 1), seed=7), folder / "src")
    ds = folder / "Dataset900_External"
    for i, case in enumerate(man.cases):
        image = nib.load(man.root / case.image)
        label = (np.asarray(nib.load(man.root / case.label).dataobj) == 1).astype(np.uint8)
        data = np.asarray(image.dataobj, dtype=np.float32)
        if broken and i == len(man.cases) - 1:
            label = np.zeros_like(label) if broken == "no_cavity" else label
            data = np.stack([data, data], axis=-1) if broken == "4d" else data
        (ds / "imagesTr").mkdir(parents=True, exist_ok=True)
        (ds / "labelsTr").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(data, image.affine), ds / "imagesTr" / f"ext{i}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, image.affine), ds / "labelsTr" / f"ext{i}.nii.gz")
    (ds / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "LA": 1}, "file_ending": ".nii.gz"}))
    return ds


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny study (one split, two arms) and a good external test set."""
    root = tmp_path_factory.mktemp("robust")
    arms = f"segmentation.arms=[{','.join(ARMS)}]"
    args = [*tiny_study_overrides(root, n_splits=1), arms, "metrics.metrics=[psnr]", "cluster.executor=debug"]
    assert sweep_main(args) == 0
    return root / "tiny", _external(root / "external")


def _runs(study: Path) -> list:
    client = MlflowClient(f"sqlite:///{study / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name("tiny").experiment_id], max_results=1000)


def test_the_families_config_lists_every_corruption():
    assert typing.get_args(ShiftFamily) == (*CORRUPTIONS, "site", "external")


def test_a_finished_study_gets_rows_for_every_arm_shift_and_severity_and_a_rerun_skips(finished, capsys):
    study, external = finished
    argv = ["--study", str(study), "--executor", "debug", "--external-test", str(external), "--external-kind",
            "nnunet", "robustness.families=[noise,site]", "robustness.severities=[1,3]"]  # fmt: skip
    assert robustness_main(argv) == 0
    assert "6 robustness jobs for 2 finished segmenters" in capsys.readouterr().out
    rows = results.read_shifted(sorted(study.glob(f"robustness/split0/seed0/*/*/{results.SHIFT_FILE}")))
    n_test = len(json.loads((study / "splits.json").read_text())["splits"][0]["test_cases"])
    points = {"noise": (1, 3), "site": (1,), "external": (1,)}
    expected = {(arm, shift, sev) for arm in ARMS for shift, sevs in points.items() for sev in sevs}
    dice = rows[rows.metric == "dice"]
    assert set(zip(dice.arm, dice["shift"], dice.severity, strict=True)) == expected
    counts = dice.groupby(["arm", "shift", "severity"]).case_id.nunique()
    assert all(counts[(arm, "external", 1)] == N_EXTERNAL for arm in ARMS)
    assert all(counts[(arm, shift, sev)] == n_test for arm, shift, sev in expected if shift != "external")
    assert set(rows.metric) >= {"dice", "hd95"} and dice.value.between(0, 1).all()
    # the segmentation job's own rows keep their columns and file
    assert list(results.read_per_case([study / "segmentation/split0/seed0/real/per_case.csv"]).columns) == list(
        results.COLUMNS
    )
    robust = [r for r in _runs(study) if r.data.tags.get("kind") == "robustness"]
    assert len(robust) == 6 and all(r.info.status == "FINISHED" for r in robust)
    assert "dice_noise_s3" in {m for r in robust for m in r.data.metrics}
    assert "Robustness under distribution shift" in (study / "report.html").read_text()

    before = len(_runs(study))
    assert robustness_main(argv) == 0
    assert "8 jobs (8 already finished)" in capsys.readouterr().out
    assert len(_runs(study)) == before  # nothing ran, not even a parent run


@pytest.mark.parametrize(("broken", "says"), [("no_cavity", "empty cavity mask"), ("4d", "expected a 3D volume")])
def test_a_bad_external_set_gets_one_line_and_leaves_the_study_untouched(finished, tmp_path, capsys, broken, says):
    study, _ = finished
    bad = _external(tmp_path, broken)
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in study.rglob("*") if p.is_file()}
    argv = ["--study", str(study), "--executor", "debug", "--external-test", str(bad), "--external-kind", "nnunet"]
    assert main_guard(lambda: robustness_main(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}") and says in err[0], err
    assert {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in study.rglob("*") if p.is_file()} == before


def test_corrupted_test_sets_are_the_same_for_every_call(finished):
    study, _ = finished
    cfg = load_config(study / "config.yaml", ["robustness.enabled=true"])
    s = Study(cfg)
    clean = clean_cases(s.manifest, s.plan.splits[0].test_cases)
    first, again = (dict(shifted_sets(cfg, "noise", clean, (2,), seed=0)) for _ in range(2))
    other = dict(shifted_sets(cfg, "noise", clean, (2,), seed=1))
    for case, (image, label, _) in first[2].items():
        assert np.array_equal(image, again[2][case][0]) and np.array_equal(label, clean[case][1])
        assert not np.array_equal(image, clean[case][0]) and not np.array_equal(image, other[2][case][0])


def test_site_needs_the_phantom_and_external_needs_its_flags():
    with pytest.raises(ConfigError, match="'site' is the phantom's scanner profile B and needs data.kind=phantom"):
        check_families(load_config(None, ["data.kind=msd", "data.root=/x", "robustness.families=[site]"]))
    with pytest.raises(ConfigError, match="robustness.families: 'external' needs robustness.external.path"):
        load_config(None, ["robustness.families=[external]"])
    with pytest.raises(ConfigError, match="--external-test and --external-kind go together"):
        sweep_main(["--dry-run", "--external-test", "/data"])
