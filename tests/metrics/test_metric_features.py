"""Feature backbones: names, seeded determinism, verified weights, the on-disk cache and bad volumes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from benchmark.config import MetricsConfig
from benchmark.errors import CheckpointError, DataError
from benchmark.metrics.features import FeatureExtractor, backbone_name, build_network

SHAPE = (16, 16, 16)


def _vol(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(SHAPE, dtype=np.float32)


def test_backbone_names():
    assert backbone_name(MetricsConfig()) == "random_resnet34_seed0"
    assert backbone_name(MetricsConfig(backbone="resnet50", backbone_seed=3)) == "random_resnet50_seed3"
    assert backbone_name(MetricsConfig(weights_path="w.pth", weights_sha256="ab" * 32)) == "medicalnet_resnet34"
    assert backbone_name(MetricsConfig(backbone="resnet10", feature_mode="2.5d")) == "random2d_resnet10_seed0"


def test_random_backbone_is_seeded_and_pooled():
    cfg = MetricsConfig(backbone="resnet10")
    a, b = FeatureExtractor(cfg), FeatureExtractor(cfg)
    other = FeatureExtractor(MetricsConfig(backbone="resnet10", backbone_seed=1))
    v = _vol(0)
    fa = a(v)
    assert fa.shape == (512,) and np.all(fa >= 0)  # ReLU then global average pooling
    np.testing.assert_array_equal(fa, b(v))
    assert not np.allclose(fa, other(v))
    torch.manual_seed(123)  # building a backbone leaves the global torch RNG untouched
    before = torch.rand(1)
    torch.manual_seed(123)
    build_network(cfg)
    assert torch.rand(1) == before


def test_feature_cache_hit_skips_the_network(tmp_path):
    cfg = MetricsConfig(backbone="resnet10")
    vols = {"a": _vol(1), "b": _vol(2)}
    ext = FeatureExtractor(cfg, tmp_path)
    ids, f1 = ext.extract(vols)
    assert ids == ["a", "b"] and f1.shape == (2, 512) and ext.n_computed == 2
    files = sorted((tmp_path / "random_resnet10_seed0").glob("*.npy"))
    assert len(files) == 2 and not list(tmp_path.rglob("*.tmp*"))
    fresh = FeatureExtractor(cfg, tmp_path)
    _, f2 = fresh.extract(vols)
    assert fresh.n_computed == 0
    np.testing.assert_array_equal(f1, f2)
    vols["b"] = vols["b"] + 0.01  # changed voxels are a different key
    fresh.extract(vols)
    assert fresh.n_computed == 1


def test_weights_are_verified_and_loaded(tmp_path):
    cfg = MetricsConfig(backbone="resnet10", backbone_seed=7)
    state = {f"module.{k}": v for k, v in build_network(cfg).state_dict().items()}  # DataParallel-style keys
    path = tmp_path / "resnet_10.pth"
    torch.save({"state_dict": state}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = FeatureExtractor(MetricsConfig(backbone="resnet10", weights_path=str(path), weights_sha256=digest))
    assert loaded.name == "medicalnet_resnet10"
    np.testing.assert_allclose(loaded(_vol(3)), FeatureExtractor(cfg)(_vol(3)), rtol=1e-6)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        FeatureExtractor(MetricsConfig(backbone="resnet10", weights_path=str(path), weights_sha256="0" * 64))
    wrong = MetricsConfig(backbone="resnet10", feature_mode="2.5d", weights_path=str(path), weights_sha256=digest)
    with pytest.raises(CheckpointError, match=r"does not fit MONAI resnet10 \(2D\)"):
        FeatureExtractor(wrong)


def test_two_and_a_half_d_features_average_slices():
    ext = FeatureExtractor(MetricsConfig(backbone="resnet10", feature_mode="2.5d"))
    v = _vol(4)
    f = ext(v)
    with torch.no_grad():
        per_slice = ext.net(torch.from_numpy(v).permute(2, 0, 1)[:, None])
    assert f.shape == (512,)
    np.testing.assert_allclose(f, per_slice.mean(0).double().numpy(), rtol=1e-6)


def test_bad_volumes_are_clear_errors(tmp_path):
    ext = FeatureExtractor(MetricsConfig(backbone="resnet10"), tmp_path)
    v = _vol(5)
    v[3, 3, 3] = np.nan
    with pytest.raises(DataError, match="case c9: volume holds 1 NaN/inf voxels"):
        ext.extract({"c9": v})
    with pytest.raises(DataError, match="expected a 3D"):
        ext(np.zeros((4, 4)), "c1")
    assert not list(tmp_path.rglob("*.npy"))
