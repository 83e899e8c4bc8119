"""Cavity-only conditioning: ``composite.k: 0`` label maps (expert cavity and wall alone), and the
``<generator>@cavity_only`` variant that a study runs beside the composite-conditioned generator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from study_fixtures import tiny_study_overrides

from benchmark.config import CompositeConfig, load_config
from benchmark.data.composite import composite_maps
from benchmark.errors import ConfigError
from benchmark.generators import GENERATORS, split_generator_name
from benchmark.run.sweep import main
from benchmark.tracking.tracker import NullTracker


def test_k0_maps_are_the_expert_cavity_and_wall():
    rng = np.random.default_rng(0)
    labels = {f"c{i}": rng.integers(0, 3, (8, 8, 4)).astype(np.uint8) for i in range(3)}
    images = {c: rng.random((8, 8, 4)).astype(np.float32) for c in labels}
    model, maps = composite_maps(images, labels, ["c0"], CompositeConfig(k=0))
    assert model.k == 0 and CompositeConfig(k=0).num_classes == 3
    for c in labels:
        assert np.array_equal(maps[c], labels[c]) and set(np.unique(maps[c])) <= {0, 1, 2}
    with pytest.raises(ConfigError, match=r"composite\.k: 1 is outside the allowed range 2\.\.10 \(or 0"):
        CompositeConfig(k=1)


def test_variant_names():
    spec, variant = split_generator_name("spade_ldm@cavity_only")
    assert (spec.name, variant) == ("spade_ldm", "cavity_only")
    assert split_generator_name("pix2pix3d")[1] is None
    with pytest.raises(ConfigError, match=r"generator 'spade_ldm@walls': unknown variant 'walls'; choices: cavity"):
        split_generator_name("spade_ldm@walls")
    with pytest.raises(ConfigError, match=r"--generators: generator 'gan9' is unknown"):
        main(["--dry-run", "--generators", "gan9@cavity_only"])


def test_a_study_plans_the_variant_beside_the_composite_generator(tmp_path, capsys):
    arms = "segmentation.arms=[real,real+spade_ldm,real+spade_ldm@cavity_only]"
    assert main(["--dry-run", *tiny_study_overrides(tmp_path, n_splits=1), arms]) == 0
    out = capsys.readouterr().out
    assert "generator=2" in out
    for gen in ("spade_ldm", "spade_ldm@cavity_only"):
        assert f"seg/split0/seed0/real+{gen}  <- gen/pool/{gen}/seed0" in out
        assert f"quality/split0/{gen}/seed0  <- gen/pool/{gen}/seed0, seg/split0/seed0/real" in out


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from benchmark.study import prepare_study

    return prepare_study(load_config(None, tiny_study_overrides(tmp_path_factory.mktemp("cavity"), n_splits=1)))


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_every_generator_trains_and_samples_on_cavity_only_maps(study, name):
    from benchmark.run.kinds.generator import run_generator
    from benchmark.run.kinds.segmentation import assemble_arm

    gen = f"{name}@cavity_only"
    torch.set_num_threads(1)
    num_classes, maps = study.label_maps("pool", gen)
    assert num_classes == 3 and set(np.unique(np.stack(list(maps.values())))) <= {0, 1, 2}
    assert np.stack(list(study.label_maps("pool", name)[1].values())).max() > 2  # the study's composite maps
    summary = run_generator(study, {"generator": gen, "scope": "pool", "seed": 0}, study.generator_dir(gen, "pool", 0),
                            NullTracker())  # fmt: skip
    assert summary["generator"] == gen
    manifest = json.loads((study.samples_dir(gen, 0, 0) / "samples.json").read_text())
    assert manifest["generator"] == gen
    assert {s["case_id"] for s in manifest["samples"]} == set(study.plan.splits[0].train_cases)
    data, audit = assemble_arm(study, {"split": 0, "seed": 0, "arm": f"real+{gen}", "ratio": 1.0})
    assert data.n_synthetic == data.n_real and not audit.leaky
