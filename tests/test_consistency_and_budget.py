"""A tiny study with the SPADE-LDM consistency loss on, arms matched in epochs and the compute-matched control:
the generator job runs after its scope's real-only segmenter, the loss is logged and finite, the audits pass, each
arm trains the steps the budget rule gives it, and the report lists every arm with its volumes and steps."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from mlflow.tracking import MlflowClient
from study_fixtures import tiny_study_overrides

from benchmark.errors import DataError
from benchmark.run.sweep import main

OVERRIDES = [
    "cluster.executor=debug",
    "generators.spade_ldm.seg_weight=0.5",
    "segmentation.budget=epochs",
    "segmentation.epochs=1",
    "segmentation.arms=[real,real@matched,real+augmented,real+spade_ldm]",
]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("consistency")
    args = ["--generators", "spade_ldm", *tiny_study_overrides(root, n_splits=1), *OVERRIDES]
    return root, args, main(args)


def test_the_generator_runs_after_its_scopes_segmenter(study, capsys):
    _, args, _ = study
    assert main(["--dry-run", *args]) == 0
    out = capsys.readouterr().out
    assert "scope_segmenter=1" in out
    assert "gen/pool/spade_ldm/seed0  <- segmenter/pool/seed0" in out


def test_the_consistency_loss_is_logged_and_finite_and_the_audits_pass(study):
    root, _, code = study
    assert code == 0
    folder = root / "tiny"
    plan = json.loads((folder / "splits.json").read_text())
    record = json.loads((folder / "segmenters/pool/seed0/segmenter.json").read_text())
    assert record["train_case_ids"] == sorted(plan["pool_cases"]) and not record["leaky"]
    tested = set(plan["splits"][0]["test_cases"])
    assert set(record["held_out_case_ids"]) == tested and not tested & set(record["train_case_ids"])
    assert 0.0 <= record["held_out_means"]["mean_dice"] <= 1.0
    done = json.loads((folder / "generators/pool/spade_ldm/seed0/done.json").read_text())
    assert done["segmenter"] == "segmenter/pool/seed0" and math.isfinite(done["final_losses"]["seg"])
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    (gen,) = client.search_runs([exp.experiment_id], "tags.job_key = 'gen/pool/spade_ldm/seed0'")
    history = client.get_metric_history(gen.info.run_id, "diffusion/seg")
    assert history and all(math.isfinite(m.value) for m in history)
    assert gen.data.tags["segmenter"] == "segmenter/pool/seed0"
    arm = json.loads((folder / "segmentation/split0/seed0/real+spade_ldm/arm.json").read_text())
    assert arm["leaky"] is False and set(arm["generator_train_ids"]) == set(record["train_case_ids"])


def test_each_arm_trains_the_steps_of_the_budget_rule_and_the_report_lists_them(study):
    root, _, _ = study
    folder = root / "tiny"
    arms = {
        a: json.loads((folder / f"segmentation/split0/seed0/{a}/arm.json").read_text())
        for a in ("real", "real@matched", "real+augmented", "real+spade_ldm")
    }
    n_real = arms["real"]["n_real"]
    largest = max(r["n_real"] + r["n_synthetic"] + r["n_augmented"] for r in arms.values())
    for name, r in arms.items():
        volumes = r["n_real"] + r["n_synthetic"] + r["n_augmented"]
        own = largest if name == "real@matched" else volumes  # one epoch of batch 2 over the arm's own volumes
        assert (r["budget"], r["steps"]) == ("epochs", math.ceil(own / 2)), name
    assert arms["real@matched"]["n_real"] == n_real and arms["real@matched"]["steps"] == arms["real+spade_ldm"]["steps"]
    assert arms["real+spade_ldm"]["steps"] > arms["real"]["steps"]
    html = (folder / "report.html").read_text()
    assert "Training budget per arm" in html and "segmentation.budget: epochs" in html
    for name, r in arms.items():  # the arm's row of the budget table: its volumes, steps and budget
        cells = [name, *(r[k] for k in ("n_real", "n_real_extra", "n_synthetic", "n_augmented"))]
        cells += [r["n_real"] + r["n_synthetic"] + r["n_augmented"], r["steps"], "epochs"]
        assert "<tr>" + "".join(f'<td class="text">{c}</td>' for c in cells) + "</tr>" in html, name


def test_a_generator_job_without_its_segmenter_names_the_job_that_makes_it(study):
    from launchers.train_generator import main as train_generator

    root, args, _ = study
    overrides = [a for a in args[2:] if a != "cluster.executor=debug"]
    for done in ("segmenters/pool/seed0", "generators/pool/spade_ldm/seed0"):  # neither made yet
        shutil.rmtree(root / "tiny" / done)
    with pytest.raises(DataError) as err:
        train_generator(
            ["--generator", "spade_ldm", "--split", "0", "--seed", "0", *overrides, "tracking.enabled=false"]
        )
    text = str(err.value)
    assert "\n" not in text and "gen/pool/spade_ldm/seed0" in text and "segmenter/pool/seed0" in text
    assert "python launchers/train_segmenter.py --generator-scope --split 0 --seed 0" in text


@pytest.mark.parametrize("protocol", ["per_split", "shared"])
def test_a_scope_segmenter_trains_on_its_generators_cases_only(tmp_path, protocol):
    from benchmark.config import load_config
    from benchmark.run.kinds.scope_segmenter import scope_cases
    from benchmark.study import prepare_study

    cfg = load_config(None, [*tiny_study_overrides(tmp_path), f"splits.protocol={protocol}"])
    study = prepare_study(cfg)
    scope = study.scope(1)
    train, held, leaky = scope_cases(study, scope)
    assert train == study.plan.generator_train_cases(1 if protocol == "per_split" else None)
    if protocol == "per_split":  # the split's own training cases; its test cases held out
        s = study.plan.splits[1]
        assert (set(train), set(held), leaky) == (set(s.train_cases), set(s.test_cases), False)
    else:  # the shared set holds every split's test cases: allowed there, and flagged like the generators
        assert leaky and not held
