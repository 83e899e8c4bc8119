"""The generator job body: training from arrays, bad input, and samples written to disk."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from benchmark.config import TrainConfig
from benchmark.errors import ConfigError, DataError
from benchmark.generators import GENERATORS
from benchmark.generators.train import make_batch_fn, sample_to_disk, train_generator

SHAPE = (32, 32, 16)
TRAIN = TrainConfig(engine="torch", batch_size=2, log_every=1, checkpoint_every=100, threads=1)


def _data(n: int = 3, num_classes: int = 4):
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, num_classes, SHAPE).astype(np.uint8) for _ in range(n)]
    return [lab.astype(np.float32) / (num_classes - 1) for lab in labels], labels


def test_unknown_generator_lists_choices(tmp_path):
    images, labels = _data()
    with pytest.raises(ConfigError, match=r"generator 'gan9' is unknown; choices: .*pix2pix3d"):
        train_generator("gan9", None, images, labels, num_classes=4, train=TRAIN, out_dir=tmp_path, seed=0)


def test_label_beyond_num_classes_names_value(tmp_path):
    images, labels = _data()
    labels[1][0, 0, 0] = 7
    with pytest.raises(DataError, match=r"training label map 1: label value 7 is outside 0..3 \(num_classes=4\)"):
        train_generator("pix2pix3d", None, images, labels, num_classes=4, train=TRAIN, out_dir=tmp_path, seed=0)


def test_batch_fn_is_a_function_of_the_rng():
    images, labels = _data()
    fn = make_batch_fn(images, labels, batch_size=2)
    a, b = fn(0, np.random.default_rng(5)), fn(9, np.random.default_rng(5))
    assert a["image"].shape == (2, 1, *SHAPE) and a["image"].dtype == torch.float32
    assert a["label"].dtype == torch.int64
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_train_then_sample_to_disk(tmp_path):
    images, labels = _data()
    cfg = GENERATORS["pix2pix3d"].config_cls.tiny()
    model, result = train_generator(
        "pix2pix3d", cfg, images, labels, num_classes=4, train=TRAIN, out_dir=tmp_path, seed=0, steps=2
    )
    assert result.steps == 2
    affine = np.diag([1.5, 1.5, 2.5, 1.0])
    affine[:3, 3] = (10.0, -4.0, 2.0)
    ids = ["case_a", "case_b"]
    out = sample_to_disk(
        model,
        dict(zip(ids, labels, strict=False)),
        dict.fromkeys(ids, affine),
        tmp_path,
        seed=0,
        reals=dict(zip(ids, images, strict=False)),
        name="pix2pix3d",
        num_classes=4,
    )
    manifest = json.loads(out.read_text())
    assert manifest["generator"] == "pix2pix3d" and manifest["seed"] == 0
    assert [s["case_id"] for s in manifest["samples"]] == ids
    img = nib.load(tmp_path / manifest["samples"][0]["path"])
    assert img.shape == SHAPE and np.allclose(img.affine, affine)
    assert img.get_data_dtype() == np.float32
    assert (tmp_path / "montage.png").stat().st_size > 1000
    # the written volume is what the generator produces for that label map
    expected = model.sample(torch.from_numpy(labels[0].astype(np.int64))[None, None])[0, 0].numpy()
    assert np.allclose(np.asarray(img.dataobj), expected, atol=1e-6)

    bad = labels[0].copy()
    bad[1, 1, 1] = 9
    with pytest.raises(DataError, match="label map case_x: label value 9"):
        sample_to_disk(model, {"case_x": bad}, {"case_x": affine}, tmp_path / "x", seed=0, num_classes=4)
    assert not (tmp_path / "x" / "samples.json").exists()


def test_a_generator_precision_replaces_train_precision_for_its_job(tmp_path, monkeypatch):
    import benchmark.generators.train as gen_train

    seen = []
    monkeypatch.setattr(gen_train, "fit", lambda model, batch_fn, *, train, **kw: seen.append(train.precision))
    images, labels = _data()
    cfg = GENERATORS["pix2pix3d"].config_cls.tiny()
    train_generator("pix2pix3d", cfg, images, labels, num_classes=4, train=TRAIN, out_dir=tmp_path, seed=0)
    cfg.precision = "bf16"
    train_generator("pix2pix3d", cfg, images, labels, num_classes=4, train=TRAIN, out_dir=tmp_path, seed=0)
    assert seen == ["fp32", "bf16"] and TRAIN.precision == "fp32"


def test_copies_are_distinct_volumes_and_the_first_is_the_single_sample(tmp_path):
    from benchmark.generators.spade_gan import SpadeGanConfig

    _, labels = _data(n=2)
    torch.manual_seed(0)
    model = GENERATORS["spade_gan"].build(SpadeGanConfig.tiny(), 4, SHAPE)
    ids = ["case_a", "case_b"]
    args = (model, dict(zip(ids, labels, strict=True)), dict.fromkeys(ids, np.eye(4)))
    single = json.loads(sample_to_disk(*args, tmp_path / "one", seed=0).read_text())
    double = json.loads(sample_to_disk(*args, tmp_path / "two", seed=0, copies=2).read_text())
    assert [s for s in double["samples"] if "copy" not in s] == single["samples"]
    assert [(s["case_id"], s["path"]) for s in double["samples"] if s.get("copy") == 1] == [
        (c, f"samples/copy1/{c}.nii.gz") for c in ids
    ]
    for c in ids:
        first, second, alone = (
            np.asarray(nib.load(tmp_path / d / "samples" / sub / f"{c}.nii.gz").dataobj)
            for d, sub in (("two", ""), ("two", "copy1"), ("one", ""))
        )
        assert np.array_equal(first, alone) and not np.allclose(first, second)

    pix = GENERATORS["pix2pix3d"].build(GENERATORS["pix2pix3d"].config_cls.tiny(), 4, SHAPE)
    with pytest.raises(ConfigError, match=r"segmentation\.ratios: .* needs 2 different volumes .* pix2pix3d samples"):
        sample_to_disk(pix, *args[1:], tmp_path / "pix", seed=0, name="pix2pix3d", copies=2)
    assert not (tmp_path / "pix").exists()
