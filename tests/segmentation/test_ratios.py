"""Synthetic:real ratios above 1: the generator job samples each training label map several times (other seeds),
and the arm of ratio r draws from the first ceil(r) volumes of each label map."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from study_fixtures import tiny_study_overrides

from benchmark.config import load_config
from benchmark.errors import ConfigError
from benchmark.run.kinds.generator import job_params, run_generator
from benchmark.run.kinds.segmentation import assemble_arm
from benchmark.run.sweep import build_graph, main
from benchmark.segmentation.arms import load_synth_index
from benchmark.tracking.tracker import NullTracker


def test_generator_jobs_ask_for_copies_only_above_ratio_1(tmp_path):
    def gen_params(ratios):
        cfg = load_config(None, [*tiny_study_overrides(tmp_path, n_splits=1), f"segmentation.ratios={ratios}"])
        return [p for _, kind, p, _ in build_graph(cfg, ["spade_ldm"], 1, lambda s: "pool") if kind == "generator"]

    assert gen_params("[1]") == [{"generator": "spade_ldm", "scope": "pool", "seed": 0}]  # as before: same hash
    assert gen_params("[0.5,1,1.5]") == [{"generator": "spade_ldm", "scope": "pool", "seed": 0, "copies": 2}]
    with pytest.raises(ConfigError, match=r"segmentation\.ratios: .* pix2pix3d samples deterministically"):
        main(["--dry-run", *tiny_study_overrides(tmp_path, n_splits=1), "segmentation.ratios=[1,2]"])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from benchmark.study import prepare_study

    root = tmp_path_factory.mktemp("ratios")
    return prepare_study(load_config(None, [*tiny_study_overrides(root, n_splits=1), "segmentation.ratios=[1,2]"]))


def test_ratio_2_writes_two_distinct_volumes_per_label_map(study):
    p = job_params(study.cfg, "labels2image", "pool", 0)
    assert p["copies"] == 2
    run_generator(study, p, study.generator_dir("labels2image", "pool", 0), NullTracker())
    folder = study.samples_dir("labels2image", 0, 0)
    index = load_synth_index(folder, generator="labels2image", split=0, seed=0)
    train = study.plan.splits[0].train_cases
    assert sorted((s.case_id, s.copy) for s in index.samples) == sorted((c, k) for c in train for k in (0, 1))
    by = {(s.case_id, s.copy): np.asarray(nib.load(s.path).dataobj) for s in index.samples}
    assert all(not np.allclose(by[c, 0], by[c, 1]) for c in train)

    double, audit = assemble_arm(study, {"split": 0, "seed": 0, "arm": "real+labels2image", "ratio": 2.0})
    assert double.n_synthetic == 2 * double.n_real == 2 * len(train) and not audit.leaky
    single, _ = assemble_arm(study, {"split": 0, "seed": 0, "arm": "real+labels2image", "ratio": 1.0})
    first = {str(s.path) for s in index.samples if s.copy == 0}
    assert single.n_synthetic == len(train) and {i.path for i in single.items if i.path} == first
