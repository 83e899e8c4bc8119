"""Robustness jobs of a training-data fraction study (graph only, no training): the full-data segmenters alone by
default; every fraction's with ``robustness.all_fractions``, a key left out of the hashes at its default."""

from __future__ import annotations

from study_fixtures import tiny_study_overrides

from benchmark.config import config_hash, load_config, to_dict
from benchmark.run.sweep import build_graph

ARMS = "segmentation.arms=[real,real+labels2image]"


def _graph(tmp_path, *extra: str) -> list[tuple[str, str, dict, tuple]]:
    ov = [*tiny_study_overrides(tmp_path), ARMS, "robustness.enabled=true", "robustness.families=[noise,site]"]
    cfg = load_config(None, [*ov, "segmentation.fractions=[0.5,1]", *extra])
    return build_graph(cfg, ["labels2image"], 2, lambda s: "pool")


def test_robustness_jobs_only_for_the_full_data_segmenters_by_default(tmp_path):
    graph = _graph(tmp_path)
    seg = {k for k, kind, *_ in graph if kind == "segmentation"}
    assert "seg/split1/seed0/real+labels2image@f0.5" in seg and len(seg) == 2 * 2 * 2  # splits x arms x fractions
    robust = [(k, p, deps) for k, kind, p, deps in graph if kind == "robustness"]
    assert len(robust) == 2 * 2 * 2  # splits x full-data arms x families
    assert all("fraction" not in p and "@f" not in k for k, p, _ in robust)
    assert {d for *_, deps in robust for d in deps} == {k for k in seg if "@f" not in k}
    assert "robust/split0/seed0/real+labels2image/noise" in {k for k, *_ in robust}


def test_all_fractions_adds_the_fraction_segmenters_and_is_hash_neutral_at_its_default(tmp_path):
    robust = {k: p for k, kind, p, _ in _graph(tmp_path, "robustness.all_fractions=true") if kind == "robustness"}
    assert len(robust) == 2 * 2 * 2 * 2
    assert robust["robust/split0/seed0/real@f0.5/site"]["fraction"] == 0.5
    base = load_config(None, tiny_study_overrides(tmp_path))
    same = load_config(None, [*tiny_study_overrides(tmp_path), "robustness.all_fractions=false"])
    assert "all_fractions" not in to_dict(base)["robustness"] and config_hash(base) == config_hash(same)
