"""SPADE-GAN: the VAE posterior's KL, feature matching, D-then-G updates with D frozen during the G step."""

from __future__ import annotations

import pytest
import torch
from step_context import RecordingContext

from benchmark.errors import ConfigError, DataError
from benchmark.generators.gan_common import one_hot_label
from benchmark.generators.spade_gan import SpadeGanConfig, build

torch.set_num_threads(1)
SHAPE = (16, 16, 16)
NUM_CLASSES = 4


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(2, 1, *SHAPE, generator=g),
        "label": torch.randint(0, NUM_CLASSES, (2, 1, *SHAPE), generator=g),
    }


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build(SpadeGanConfig.tiny(), NUM_CLASSES, SHAPE)


def test_step_updates_d_then_g_with_d_frozen(model):
    stage = model.stages()[0]
    assert stage.networks == ("generator", "discriminator")
    ctx = RecordingContext(model, stage)
    disc = model.networks["discriminator"]
    d_before = [p.detach().clone() for p in disc.parameters()]
    losses = model.train_step(ctx, stage, _batch())

    assert [e[0] for e in ctx.events] == ["discriminator", "generator"]
    _, reached_d, _ = ctx.events[0]
    assert reached_d["discriminator"] and not reached_d["generator"]  # fake was detached for the D loss
    _, reached_g, frozen_g = ctx.events[1]
    assert reached_g["generator"]
    assert not reached_g["discriminator"] and frozen_g["discriminator"]
    # D's grads were cleared by its step and the G update left none behind
    assert all(p.grad is None for p in model.networks["discriminator"].parameters())
    assert all(p.requires_grad for p in model.networks["discriminator"].parameters())  # unfrozen again
    assert any(not torch.equal(a, b) for a, b in zip(d_before, disc.parameters(), strict=True))
    assert set(losses) == {"d", "g", "g_adv", "g_fm", "g_kl", "g_l1"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())


def test_kl_is_the_posterior_divergence_and_positive(model):
    stage = model.stages()[0]
    batch = _batch(1)
    with torch.no_grad():
        mu, logvar = model.networks["generator"].net.encoder(batch["image"])
    expected = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
    losses = model.train_step(RecordingContext(model, stage), stage, batch)
    assert losses["g_kl"].item() > 0
    torch.testing.assert_close(losses["g_kl"], expected)


def test_feature_matching_compares_discriminator_features(model):
    batch = _batch(2)
    seg = one_hot_label(batch["label"], NUM_CLASSES)
    gen, disc = model.networks["generator"], model.networks["discriminator"]
    fake, mu, logvar = gen(seg, batch["image"], torch.zeros(2, model.cfg.z_dim))
    losses = model._generator_losses(disc, batch["image"], seg, fake, mu, logvar)
    assert losses["g_fm"].item() > 0
    same = model._generator_losses(disc, batch["image"], seg, batch["image"].clone(), mu, logvar)
    assert same["g_fm"].item() == 0.0
    outs = disc(torch.cat([batch["image"], seg], 1))
    assert len(outs) == 2  # full and half resolution
    assert outs[1][-1].shape[2:] < outs[0][-1].shape[2:]


def test_sample_draws_z_from_the_prior(model):
    label = _batch()["label"]
    a = model.sample(label, generator=torch.Generator().manual_seed(5))
    b = model.sample(label, generator=torch.Generator().manual_seed(5))
    c = model.sample(label, generator=torch.Generator().manual_seed(6))
    assert a.shape == (2, 1, *SHAPE) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert model.networks["generator"].training  # mode restored


def test_bad_labels_and_shapes_are_refused(model):
    with pytest.raises(DataError, match="outside the configured classes 0..3"):
        model.sample(torch.full((1, 1, *SHAPE), NUM_CLASSES))
    with pytest.raises(ConfigError, match="divisible by 4"):
        build(SpadeGanConfig.tiny(), NUM_CLASSES, (16, 16, 6))


def test_channels_list_is_not_mutated():
    cfg = SpadeGanConfig.tiny()
    build(cfg, NUM_CLASSES, SHAPE)
    build(cfg, NUM_CLASSES, SHAPE)
    assert cfg.channels == (4, 8)


def test_decoder_upsampling_mode_is_a_key():
    from dataclasses import replace

    torch.manual_seed(0)
    nearest = build(SpadeGanConfig.tiny(), NUM_CLASSES, SHAPE)
    torch.manual_seed(0)
    trilinear = build(replace(SpadeGanConfig.tiny(), upsampling="trilinear"), NUM_CLASSES, SHAPE)
    assert nearest.networks["generator"].net.decoder.upsampling.mode == "nearest"  # MONAI's default, the CPU study's
    assert trilinear.networks["generator"].net.decoder.upsampling.mode == "trilinear"
    label = _batch()["label"][:1]
    a = nearest.sample(label, generator=torch.Generator().manual_seed(1))
    b = trilinear.sample(label, generator=torch.Generator().manual_seed(1))
    assert a.shape == b.shape == (1, 1, *SHAPE) and torch.isfinite(b).all() and not torch.equal(a, b)
