"""labels2image: fitted per-label intensity statistics, and samples that follow them in the real normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.config import TrainConfig
from benchmark.engine.loop import fit
from benchmark.errors import DataError
from benchmark.generators.labels2image import Labels2ImageConfig, build, gaussian_kernel, smooth

SHAPE = (24, 24, 16)
MEANS = (0.05, 0.8, 0.3, 0.55)  # per label, in a [0, 1] normalisation
STDS = (0.02, 0.06, 0.04, 0.05)


def _pair(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Four slabs of labels 0..3 (shifted per case) painted with Gaussian intensities, clipped to [0, 1]."""
    rng = np.random.default_rng(k)
    label = np.zeros(SHAPE, np.int64)
    for lab, lo in enumerate((0, 6 + k, 12 + k, 18)):
        label[lo:] = lab
    image = np.take(MEANS, label) + np.take(STDS, label) * rng.standard_normal(SHAPE)
    return np.clip(image, 0.0, 1.0).astype(np.float32), label


PAIRS = [_pair(k) for k in range(4)]


def _batch_fn(step: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    # every case exactly once over two steps: the fitted statistics are those of the four volumes
    img, lab = zip(*PAIRS[2 * step : 2 * step + 2], strict=True)
    return {"image": torch.from_numpy(np.stack(img))[:, None], "label": torch.from_numpy(np.stack(lab))[:, None]}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    model = build(Labels2ImageConfig(steps=2), num_classes=4, shape=SHAPE)
    train = TrainConfig(engine="torch", batch_size=2, log_every=1, checkpoint_every=100, threads=1, prefetch=0)
    result = fit(model, _batch_fn, train=train, out_dir=tmp_path_factory.mktemp("l2i"), seed=0)
    return model, result


def test_fit_accumulates_the_exact_per_label_statistics(fitted):
    model, result = fitted
    images = np.concatenate([p[0].ravel() for p in PAIRS]).astype(np.float64)
    labels = np.concatenate([p[1].ravel() for p in PAIRS])
    mean, within, between = (t.numpy() for t in model.label_moments())
    for lab in range(4):
        per_volume = [img[lb == lab].astype(np.float64) for img, lb in PAIRS]
        deviations = np.concatenate([v - v.mean() for v in per_volume])
        np.testing.assert_allclose(mean[lab], images[labels == lab].mean(), rtol=1e-6)
        np.testing.assert_allclose(within[lab], np.sqrt(np.mean(deviations**2)), rtol=1e-6)
        np.testing.assert_allclose(between[lab], np.std([v.mean() for v in per_volume]), rtol=1e-5)
    np.testing.assert_allclose(mean, MEANS, atol=0.01)
    np.testing.assert_allclose(within[1:], STDS[1:], rtol=0.1)  # label 0 is clipped at 0
    assert (between < 0.3 * within).all()  # the four volumes share their label means
    assert model.networks["stats"].extremes.tolist() == [float(images.min()), float(images.max())]
    assert result.steps == 2 and result.final_losses["mean"] == pytest.approx(mean.mean(), rel=1e-5)
    assert not any(p.requires_grad for p in model.networks["stats"].parameters())


def _core(label_value: int) -> tuple[slice, ...]:
    """Rows 2..3 of a label's six-row slab in case 0: two voxels from the slab's edges."""
    return (slice(6 * label_value + 2, 6 * label_value + 4), slice(None), slice(None))


def test_samples_follow_the_fitted_intensities_in_the_real_range(fitted):
    model, _ = fitted
    out = model.sample(torch.from_numpy(PAIRS[0][1])[None, None], generator=torch.Generator().manual_seed(0))
    out = out[0, 0].numpy()
    assert out.shape == SHAPE and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0  # the training images' range, i.e. their normalisation
    mean = model.label_moments()[0].numpy()
    for k in range(4):  # the bias field (about 10%) moves a slab's mean a little, never to another label's
        assert abs(out[_core(k)].mean() - mean[k]) < 0.1 * mean[k] + 0.02, (k, out[_core(k)].mean(), mean[k])


def test_smoothing_keeps_the_fitted_within_label_std(fitted):
    model, _ = fitted
    plain = build(Labels2ImageConfig(bias_std=0.0, noise_std=0.0), 4, SHAPE)
    plain.networks["stats"].load_state_dict(model.networks["stats"].state_dict())
    out = plain.sample(torch.from_numpy(PAIRS[0][1])[None, None], generator=torch.Generator().manual_seed(1))
    mean, std, _ = (t.numpy() for t in plain.label_moments())
    for k in (1, 2, 3):  # label 0 sits at the clip floor
        core = out[0, 0].numpy()[_core(k)]
        assert core.mean() == pytest.approx(mean[k], abs=0.3 * std[k])
        assert core.std() == pytest.approx(std[k], rel=0.25), (k, core.std(), std[k])


def test_scan_to_scan_contrast_is_fitted_and_sampled(tmp_path):
    # label 2's mean moves by 0.05 from one training volume to the next: a between-volume std of 0.0559
    shifted = [(np.where(lab == 2, img + 0.05 * k, img).astype(np.float32), lab) for k, (img, lab) in enumerate(PAIRS)]

    def batch_fn(step, rng):
        img, lab = zip(*shifted[2 * step : 2 * step + 2], strict=True)
        return {"image": torch.from_numpy(np.stack(img))[:, None], "label": torch.from_numpy(np.stack(lab))[:, None]}

    model = build(Labels2ImageConfig(steps=2, bias_std=0.0, noise_std=0.0), num_classes=4, shape=SHAPE)
    train = TrainConfig(engine="torch", batch_size=2, threads=1, prefetch=0)
    fit(model, batch_fn, train=train, out_dir=tmp_path, seed=0)
    _, within, between = (t.numpy() for t in model.label_moments())
    assert between[2] == pytest.approx(np.std([0.05 * k for k in range(4)]), rel=0.05)
    assert within[2] == pytest.approx(STDS[2], rel=0.1) and between[1] < 0.01  # label 1 did not move
    labels = torch.from_numpy(PAIRS[0][1])[None, None].repeat(16, 1, 1, 1, 1)
    out = model.sample(labels, generator=torch.Generator().manual_seed(0))
    means = out[(slice(None), 0, *_core(2))].mean(dim=(1, 2, 3)).numpy()
    assert 0.5 * between[2] < means.std() < 1.6 * between[2]


def test_sampling_is_seeded_and_refuses_unfitted_labels(fitted):
    model, _ = fitted
    label = torch.from_numpy(PAIRS[1][1])[None, None]
    a = model.sample(label, generator=torch.Generator().manual_seed(5))
    b = model.sample(label, generator=torch.Generator().manual_seed(5))
    c = model.sample(label, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    partial = build(Labels2ImageConfig(), 4, SHAPE)
    with torch.no_grad():
        partial.networks["stats"].moments[:2, 0] = 10.0  # labels 0 and 1 seen, 2 and 3 not
    with pytest.raises(DataError, match=r"no fitted intensities for label\(s\) \[2, 3\]"):
        partial.sample(label)


def test_smoothing_keeps_the_mean_and_the_kernel_is_normalised():
    k = gaussian_kernel(1.0)
    assert len(k) == 7 and k.sum().item() == pytest.approx(1.0) and k[3] == k.max()
    x = torch.randn((1, 1, *SHAPE), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = smooth(x, 1.0)
    assert y.shape == x.shape and y.std() < 0.3 * x.std()
    assert torch.equal(smooth(x, 0.0), x)
