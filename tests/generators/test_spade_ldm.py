"""SPADE-LDM: null-mask classifier-free guidance, label-map nulling rate, samplers, segmentation consistency."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from monai.networks.nets import UNet
from step_context import RecordingContext

from benchmark.errors import ConfigError
from benchmark.generators.guidance import guided_eps, null_label_dropout
from benchmark.generators.spade_ldm import SpadeLdmConfig, build

torch.set_num_threads(1)
SHAPE = (16, 16, 16)
NUM_CLASSES = 4


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(2, 1, *SHAPE, generator=g),
        "label": torch.randint(0, NUM_CLASSES, (2, 1, *SHAPE), generator=g),
    }


def _randomise(net: torch.nn.Module, seed: int = 0) -> None:
    """Random weights everywhere: MONAI zero-initialises the U-Net's output conv, which would hide guidance."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _model(**overrides):
    torch.manual_seed(0)
    model = build(replace(SpadeLdmConfig.tiny(), **overrides), NUM_CLASSES, SHAPE)
    _randomise(model.networks["unet"])
    model.latent_scale = 1.0
    return model


def test_guided_eps_end_points_are_exact_and_guidance_changes_the_prediction():
    model = _model()
    unet = model.networks["unet"].eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 8, 8, 8, generator=g)
    t = torch.tensor([10, 700])
    seg = model.latent_label(_batch()["label"])
    with torch.no_grad():
        eps_cond = unet(x, t, seg)
        eps_uncond = unet(x, t, torch.zeros_like(seg))
        assert not torch.equal(eps_cond, eps_uncond)  # the null map is a different condition
        assert torch.equal(guided_eps(unet, x, t, seg, 0.0), eps_uncond)
        assert torch.equal(guided_eps(unet, x, t, seg, 1.0), eps_cond)
        guided = guided_eps(unet, x, t, seg, 1.5)
    assert not torch.allclose(guided, eps_cond)
    torch.testing.assert_close(guided, eps_cond + 0.5 * (eps_cond - eps_uncond))


def test_guided_sample_differs_from_the_conditional_sample():
    model = _model()
    label = _batch()["label"]

    def draw(w):
        return model.sample(label, generator=torch.Generator().manual_seed(3), sampler="ddim", steps=4, guidance=w)

    guided, conditional = draw(1.5), draw(1.0)
    assert guided.shape == conditional.shape == (2, 1, *SHAPE)
    assert torch.equal(conditional, draw(1.0))  # same seed, same sample: the difference is the guidance
    assert (guided - conditional).abs().max() > 1e-4


def test_null_label_rate_matches_p_uncond():
    seg = torch.ones(20_000, 2, 1, 1, 1)
    out, dropped = null_label_dropout(seg, 0.1, torch.Generator().manual_seed(0))
    # binomial sd of the rate is sqrt(0.1 * 0.9 / 20000) = 0.0021; 0.01 is ~4.7 sd
    assert abs(dropped.float().mean().item() - 0.1) < 0.01
    assert torch.equal(out[dropped], torch.zeros_like(out[dropped]))  # dropped samples: the all-zero null map
    assert torch.equal(out[~dropped], seg[~dropped])
    assert not null_label_dropout(seg, 0.0, None)[1].any()
    assert null_label_dropout(seg, 1.0, None)[1].all()


@pytest.mark.parametrize("p_uncond", [0.0, 1.0])
def test_training_feeds_the_null_map_to_the_unet(p_uncond):
    model = _model(p_uncond=p_uncond)
    seen = []
    model.networks["unet"].register_forward_pre_hook(lambda _m, args: seen.append(args[2].detach().clone()))
    stage = model.stages()[1]
    batch = _batch()
    losses = model.train_step(RecordingContext(model, stage), stage, batch)
    assert torch.isfinite(losses["eps_mse"])
    expected = model.latent_label(batch["label"]) * (1.0 - p_uncond)
    assert torch.equal(seen[0], expected)


def test_ddpm_and_ddim_loops_give_volumes():
    model = _model(num_train_timesteps=20, ddim_steps=4)
    label = _batch()["label"][:1]
    for sampler in ("ddpm", "ddim"):
        out = model.sample(label, generator=torch.Generator().manual_seed(0), sampler=sampler)
        assert out.shape == (1, 1, *SHAPE) and out.dtype == torch.float32
        assert torch.isfinite(out).all()


def test_autoencoder_stage_trains_autoencoder_and_discriminator_with_r1():
    model = _model(r1_warmup=1)
    stage = model.stages()[0]
    ctx = RecordingContext(model, stage)
    first = model.train_step(ctx, stage, _batch())
    ctx.step = 1
    second = model.train_step(ctx, stage, _batch(1))
    assert first["r1"].item() == 0.0 and second["r1"].item() > 0  # R1 starts after its warm-up
    assert [e[0] for e in ctx.events] == ["discriminator", "autoencoder"] * 2
    assert not ctx.events[1][1]["discriminator"]  # D frozen in the autoencoder update
    assert all(torch.isfinite(v) for v in second.values())


@pytest.mark.parametrize("ranks,starts", [(1, False), (2, True)])
def test_warm_ups_count_the_steps_of_a_one_rank_run(ranks, starts):
    model = _model(r1_warmup=4, adv_warmup=4)  # step 2 on each of 2 ranks is step 4 of a one-rank run
    stage = model.stages()[0]
    ctx = RecordingContext(model, stage)
    ctx.step, ctx.ranks = 2, ranks
    losses = model.train_step(ctx, stage, _batch())
    assert (losses["r1"].item() > 0) is starts
    assert ("discriminator" in [e[0] for e in ctx.events]) is starts


def test_latent_scale_is_measured_once_and_checkpointed():
    model = build(SpadeLdmConfig.tiny(), NUM_CLASSES, SHAPE)
    stage = model.stages()[1]
    ctx = RecordingContext(model, stage)
    model.train_step(ctx, stage, _batch())
    scale = model.state_extra()["latent_scale"]
    assert scale is not None and scale > 0
    model.train_step(ctx, stage, _batch(1))
    assert model.state_extra()["latent_scale"] == scale
    other = build(SpadeLdmConfig.tiny(), NUM_CLASSES, SHAPE)
    other.load_state_extra(model.state_extra())
    assert other.latent_scale == scale


def _segmenter() -> UNet:
    torch.manual_seed(1)
    return UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8), strides=(2,), num_res_units=0)


def test_segmentation_consistency_trains_only_the_unet():
    model = _model(seg_weight=1.0, p_uncond=0.0)
    segmenter = _segmenter()
    model.set_segmenter(segmenter)
    stage = model.stages()[1]
    ctx = RecordingContext(model, stage)
    batch = _batch()
    label = batch["label"]
    # the consistency loss alone reaches the diffusion U-Net and nothing else
    unet, ae = model.networks["unet"], model.networks["autoencoder"]
    g = torch.Generator().manual_seed(0)
    z_t = torch.randn(2, 2, 8, 8, 8, generator=g)
    t = torch.tensor([5, 50])
    eps = unet(z_t, t, model.latent_label(label))
    loss = model._consistency_loss(ae, z_t, eps, t, label, torch.tensor([True, True]))
    assert loss.item() > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in unet.parameters())
    assert all(p.grad is None for p in ae.parameters())
    assert all(p.grad is None for p in segmenter.parameters())
    unet.zero_grad(set_to_none=True)
    # and inside the training step
    losses = model.train_step(ctx, stage, batch)
    assert losses["seg"].item() > 0
    torch.testing.assert_close(losses["diffusion"], losses["eps_mse"] + losses["seg"])
    assert ctx.events[0][0] == "unet"
    assert ctx.events[0][1] == {"autoencoder": False, "discriminator": False, "unet": True}
    assert all(p.grad is None for p in segmenter.parameters())


def test_consistency_weight_without_segmenter_fails_loudly():
    model = _model(seg_weight=1.0)
    stage = model.stages()[1]
    with pytest.raises(ConfigError, match="set_segmenter"):
        model.train_step(RecordingContext(model, stage), stage, _batch())
