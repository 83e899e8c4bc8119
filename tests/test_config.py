"""Typed config loader: every shipped YAML loads; bad keys, types and choices fail with the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.config import config_hash, load_config, parse_overrides, save_config
from benchmark.errors import ConfigError

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").rglob("*.yaml"))


def test_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"default.yaml", "paper.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.name))
def test_every_config_loads(path):
    if path.parent.name == "cluster":
        from benchmark.config import ClusterConfig, build_section, read_yaml

        build_section(ClusterConfig, read_yaml(path), "cluster")
        return
    if path.name == "gpu_peaks.yaml":  # the profiler's GPU peak table, not a study config
        from benchmark.profiling.model import load_peaks

        assert {e["name"] for e in load_peaks(str(path))} >= {"V100-SXM2", "A100-SXM4", "H100-SXM5", "H200-SXM"}
        return
    cfg = load_config(path)
    assert cfg.composite.num_classes == cfg.composite.k + 2


def test_overrides_apply_and_coerce():
    cfg = load_config(None, ["preprocess.shape=[32,32,16]", "composite.k=4", "segmentation.lr=1e-3"])
    assert cfg.preprocess.shape == (32, 32, 16)
    assert cfg.composite.k == 4
    assert cfg.segmentation.lr == 0.001
    assert parse_overrides(["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("preprocess.shpe=[1,2,3]", r"preprocess\.shpe: unknown key; allowed keys here: .*shape"),
        ("cluster.executor=slurmm", r"cluster\.executor: 'slurmm' is not one of the allowed choices: 'debug'"),
        ("composite.k=abc", r"composite\.k: expected an integer"),
        ("composite.k=12", r"^composite\.k: 12 is outside the allowed range 2\.\.10"),
        ("preprocess.shape=[1,2]", r"preprocess\.shape: expected 3 values"),
        ("train.batch_size=true", r"train\.batch_size: expected an integer"),
        ("nosuchsection.x=1", r"nosuchsection: unknown key"),
        ("shape", r"overrides are key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  kindd: phantom\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: data\.kindd: unknown key"):
        load_config(bad)
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match=r"evil\.yaml: not valid YAML for the safe loader"):
        load_config(evil)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_resolved_config_roundtrips(tmp_path):
    cfg = load_config(None, ["name=roundtrip", "composite.k=7"])
    path = save_config(cfg, tmp_path)
    again = load_config(path)
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)
    assert config_hash(load_config(None, ["composite.k=6"])) != config_hash(cfg)
