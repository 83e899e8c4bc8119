"""A tiny per_split study with two training-data fractions (0.5, 1), arms matched in epochs and the compute-matched
control: each arm trains the steps of the budget rule at its fraction, the fraction-0.5 generator saw only that
fraction's patients (and the audit refuses one that saw more), and the report lists every arm x fraction with its
volumes and steps next to the Dice-vs-fraction plot."""

from __future__ import annotations

import json
import math

import pytest
from mlflow.tracking import MlflowClient
from study_fixtures import tiny_study_overrides

from benchmark.config import load_config
from benchmark.run.sweep import main
from benchmark.segmentation.arms import LeakageError, audit_arm, build_arm, load_synth_index
from benchmark.segmentation.fractions import n_patients
from benchmark.study import Study

ARMS = ("real", "real@matched", "real+augmented", "real+labels2image")
OVERRIDES = [
    "cluster.executor=debug",
    "splits.protocol=per_split",
    "segmentation.fractions=[0.5,1]",
    "segmentation.budget=epochs",
    "segmentation.epochs=1",
    f"segmentation.arms=[{','.join(ARMS)}]",
]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("fractions")
    overrides = [*tiny_study_overrides(root, n_splits=1), *OVERRIDES]
    code = main(["--generators", "labels2image", *overrides])
    return root / "tiny", Study(load_config(None, overrides)), code


def _arms(folder):
    out = {}
    for part in ("@f0.5", ""):
        for arm in ARMS:
            out[arm + part] = json.loads((folder / f"segmentation/split0/seed0/{arm}{part}/arm.json").read_text())
    return out


def test_each_arm_trains_the_steps_of_the_budget_rule_at_its_fraction(study):
    folder, _, code = study
    assert code == 0
    arms = _arms(folder)
    for part, fraction in (("@f0.5", 0.5), ("", 1.0)):
        group = {a: arms[a + part] for a in ARMS}
        largest = max(r["n_volumes"] for r in group.values())
        for name, r in group.items():
            assert r["fraction"] == fraction and r["n_volumes"] == r["n_real"] + r["n_synthetic"] + r["n_augmented"]
            own = largest if name == "real@matched" else r["n_volumes"]  # one epoch of batch 2
            assert (r["budget"], r["steps"]) == ("epochs", math.ceil(own / 2)), name + part
        n_real = group["real"]["n_real"]
        assert group["real+labels2image"]["n_synthetic"] == n_real == group["real+augmented"]["n_augmented"]
    assert arms["real@f0.5"]["n_real"] < arms["real"]["n_real"]
    assert arms["real@f0.5"]["n_train_patients"] == n_patients(0.5, arms["real"]["n_train_patients"])
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([exp.experiment_id], "tags.job_key = 'seg/split0/seed0/real@matched@f0.5'")
    assert run.data.tags["fraction"] == "0.5" and run.data.metrics["train_steps"] == arms["real@matched@f0.5"]["steps"]


def test_the_fraction_generator_saw_only_its_fractions_patients(study):
    folder, st, _ = study
    arms = _arms(folder)
    chosen = arms["real@f0.5"]["sources"]["real"]
    assert sorted(chosen) == sorted(st.fraction_cases(0, 0, 0.5))
    assert set(chosen) < set(arms["real"]["sources"]["real"])  # nested in the full training set
    samples = json.loads((folder / "samples/split0/labels2image/seed0@f0.5/samples.json").read_text())
    assert samples["scope"] == "split0@f0.5" and samples["train_case_ids"] == sorted(chosen)
    assert {s["case_id"] for s in samples["samples"]} == set(chosen)
    synth = arms["real+labels2image@f0.5"]
    assert synth["generator_train_ids"] == sorted(chosen) and synth["leaky"] is False
    assert (folder / "generators/split0@f0.5/labels2image/seed0/done.json").is_file()
    # the full split's generator under a fraction-0.5 arm: the audit refuses it
    split, arrays = st.plan.splits[0], st.arrays
    full = load_synth_index(st.samples_dir("labels2image", 0, 0), generator="labels2image", split=0, seed=0)
    train = st.fraction_cases(0, 0, 0.5)
    real = {c: (arrays[c].image, arrays[c].label) for c in train}
    data = build_arm("real+labels2image", train, split.test_cases, real, {"labels2image": full}, seed=0)
    data.fraction = 0.5
    with pytest.raises(LeakageError, match="outside the arm's training cases"):
        audit_arm(data, split, st.patient_of)


def test_the_report_lists_every_arm_and_fraction_and_embeds_the_dice_vs_fraction_plot(study):
    folder, _, _ = study
    html = (folder / "report.html").read_text()
    for name, r in _arms(folder).items():  # the budget table: arm, fraction, counts, volumes, steps, budget
        cells = [name, f"{r['fraction']:g}", *(r[k] for k in ("n_real", "n_real_extra", "n_synthetic", "n_augmented"))]
        cells += [r["n_volumes"], r["steps"], "epochs"]
        assert "<tr>" + "".join(f'<td class="text">{c}</td>' for c in cells) + "</tr>" in html, name
    assert (folder / "report_files/dice_vs_fraction.png").stat().st_size > 1000
    assert "Training-data fraction" in html and 'alt="Dice vs training-data fraction"' in html
