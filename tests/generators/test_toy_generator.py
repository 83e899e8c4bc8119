"""A fourth generator is one file plus one registry line.

The toy below is that file (config, model, build function), ``register`` is that line. Registered at run time, it
passes the same contract checks as the real generators, gets its config section from the loader, its own jobs in
the sweep's graph and a dry-run sweep, trains for ``epochs`` passes and is profiled through its declared hooks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from generator_contract import check_declared_features, check_resume_is_bit_identical, check_two_steps_and_sample
from torch import nn

from benchmark.config import TrainConfig, load_config, to_dict
from benchmark.engine.contract import Stage, StepContext
from benchmark.errors import ConfigError
from benchmark.generators import GENERATORS, register
from benchmark.generators.base import Generator, GeneratorConfig, GeneratorSpec
from benchmark.generators.gan_common import make_adam, one_hot_label
from benchmark.generators.guidance import device_generator

REPO = Path(__file__).resolve().parents[2]

# ----- the generator's file --------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ToyConfig(GeneratorConfig):
    """A one-convolution denoiser: predicts the image from (one-hot label, noise), refined ``refine_steps`` times."""

    width: int = 4
    lr: float = 1e-2
    steps: int = 5
    l1_warmup: int = 3  # steps before an L1 term joins the MSE
    refine_steps: int = 4

    def warmups(self) -> dict[str, int]:
        return {"l1_warmup": self.l1_warmup}

    def samplers(self) -> dict[str, int]:
        return {"ddpm": self.refine_steps}

    def default_sampler(self) -> str:
        return "ddpm"

    @classmethod
    def tiny(cls) -> ToyConfig:
        return cls(width=2, steps=2, refine_steps=2)


class Toy(Generator):
    """Networks: ``net``; one stage ``fit``. ``calls`` records the keyword arguments of every ``sample`` call."""

    def __init__(self, cfg: ToyConfig, num_classes: int, shape: tuple[int, int, int]):
        self.cfg, self.num_classes, self.calls = cfg, num_classes, []
        net = nn.Sequential(nn.Conv3d(num_classes + 1, cfg.width, 3, padding=1), nn.ReLU(), nn.Conv3d(cfg.width, 1, 1))
        self.networks: dict[str, nn.Module] = {"net": net}

    def stages(self) -> list[Stage]:
        return [Stage("fit", ("net",), self.cfg.steps)]

    def make_optimizer(self, name: str, params: list[nn.Parameter], total_steps: int) -> tuple:
        return make_adam(params, self.cfg.lr, (0.9, 0.999), total_steps)

    def train_step(self, ctx: StepContext, stage: Stage, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = batch["image"].to(ctx.device)
        seg = one_hot_label(batch["label"].to(ctx.device), self.num_classes)
        noise = torch.randn(image.shape, generator=ctx.generator, device=ctx.device)
        pred = ctx.module("net")(torch.cat([seg, noise], 1))
        loss = F.mse_loss(pred, image)
        if ctx.step >= self.cfg.l1_warmup:
            loss = loss + F.l1_loss(pred, image)
        ctx.backward("net", loss)
        ctx.optimizer_step("net")
        return {"loss": loss.detach()}

    def state_extra(self) -> dict[str, Any]:
        return {}

    def load_state_extra(self, state: dict[str, Any]) -> None:
        pass

    @torch.no_grad()
    def sample(self, label, *, generator=None, sampler=None, steps=None) -> torch.Tensor:
        self.calls.append({"sampler": sampler, "steps": steps})
        net = self.networks["net"]
        device = next(net.parameters()).device
        seg = one_hot_label(label.to(device), self.num_classes)
        gen = device_generator(generator, device)
        x = torch.randn((label.shape[0], 1, *label.shape[2:]), generator=gen, device=device)
        for _ in range(steps or self.cfg.refine_steps):
            x = net(torch.cat([seg, x], 1))
        return x.float()


def build(config: ToyConfig, num_classes: int, shape: tuple[int, int, int]) -> Toy:
    return Toy(config, num_classes, shape)


# ----- the tests --------------------------------------------------------------------------------------------------


@pytest.fixture
def toy():
    """The toy's registry line, for one test; ``GENERATORS`` is restored afterwards."""
    saved = dict(GENERATORS)
    try:
        yield register(GeneratorSpec("toy", ToyConfig, build))
    finally:
        GENERATORS.clear()
        GENERATORS.update(saved)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_toy_passes_the_generator_contract(toy, tmp_path):
    assert GENERATORS["toy"] is toy
    check_declared_features(toy)
    check_two_steps_and_sample(toy, tmp_path / "steps")
    check_resume_is_bit_identical(toy, tmp_path / "resume")
    assert build(ToyConfig(), 4, (16, 16, 16)).tags() == {}  # the protocol's default


def test_registry_is_restored_and_a_second_toy_is_refused(toy):
    with pytest.raises(ConfigError, match="generator 'toy' is already registered"):
        register(GeneratorSpec("toy", ToyConfig, build))
    assert GENERATORS["toy"] is toy and list(GENERATORS)[-1] == "toy"


def test_no_toy_outside_the_fixture():
    assert "toy" not in GENERATORS
    with pytest.raises(ConfigError, match=r"generators.toy: unknown generator"):
        load_config(None, ["generators.toy.width=3"])


def test_loader_resolves_the_toy_section(toy):
    cfg = load_config(None, ["generators.toy.width=3", "generators.toy.epochs=2"])
    assert isinstance(cfg.generators["toy"], ToyConfig)
    assert (cfg.generators["toy"].width, cfg.generators["toy"].epochs, cfg.generators["toy"].steps) == (3, 2, 5)
    with pytest.raises(ConfigError, match=r"generators.toy.bogus: unknown key; allowed keys here: epochs, l1_warmup"):
        load_config(None, ["generators.toy.bogus=1"])


def test_epochs_become_steps_of_every_stage(toy, tmp_path):
    from benchmark.generators.train import train_generator

    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 4, (16, 16, 16)).astype(np.uint8) for _ in range(3)]
    images = [lab.astype(np.float32) / 3 for lab in labels]
    train = TrainConfig(engine="torch", batch_size=2, log_every=1, checkpoint_every=100, threads=1, prefetch=0)
    _, result = train_generator("toy", ToyConfig(epochs=2), images, labels, num_classes=4, train=train,
                                out_dir=tmp_path, seed=0)  # fmt: skip
    assert result.steps == 2 * math.ceil(3 / 2)  # not the config's 5 steps


def test_sweep_graph_gives_the_toy_its_jobs(toy):
    from benchmark.run.sweep import build_graph

    cfg = load_config(None, ["seeds=[0,1]"])
    graph = build_graph(cfg, ["toy"], 2, lambda split: f"split{split}")
    by_key = {key: (kind, params, deps) for key, kind, params, deps in graph}
    assert len(graph) == len(by_key) == 2 * (2 + 2 * 3 + 2)  # seeds x (generators + splits x arms + quality)
    assert [k for k, (kind, _, _) in by_key.items() if kind == "generator"] == [
        "gen/split0/toy/seed0", "gen/split1/toy/seed0", "gen/split0/toy/seed1", "gen/split1/toy/seed1",
    ]  # fmt: skip
    assert by_key["gen/split1/toy/seed1"] == ("generator", {"generator": "toy", "scope": "split1", "seed": 1}, ())
    seg = by_key["seg/split1/seed1/real+toy"]
    assert seg == ("segmentation", {"split": 1, "seed": 1, "arm": "real+toy", "ratio": 1.0}, ("gen/split1/toy/seed1",))
    assert by_key["seg/split1/seed1/real"][2] == () and by_key["seg/split1/seed1/real+augmented"][2] == ()
    quality = by_key["quality/split0/toy/seed1"]
    assert quality == ("quality", {"generator": "toy", "split": 0, "seed": 1},
                       ("gen/split0/toy/seed1", "seg/split0/seed1/real"))  # fmt: skip


def test_dry_run_sweep_lists_the_toy_jobs(toy, tmp_path, capsys):
    from benchmark.run.sweep import main

    args = [
        "--dry-run", "--generators", "toy", "--splits", "2", "--config", str(REPO / "configs" / "default.yaml"),
        "name=toy_study", f"output_dir={tmp_path}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.phantom.n_patients=8", "data.phantom.scans_per_patient=[1,1]", "splits.test_fraction=0.34",
        "splits.pool_fraction=0.25", "generators.toy.refine_steps=3", "robustness.enabled=false",
    ]  # fmt: skip
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    # disjoint_pool (configs/default.yaml): one toy trained on the pool serves both splits; 4 arms per split
    assert lines[0] == "study toy_study: 11 jobs generator=1, segmentation=8, quality=2"
    listed = dict(line.strip().partition("  <- ")[::2] for line in lines[1:])
    assert listed["gen/pool/toy/seed0"] == ""
    assert listed["seg/split1/seed0/real+toy"] == "gen/pool/toy/seed0"
    assert listed["quality/split1/toy/seed0"] == "gen/pool/toy/seed0, seg/split1/seed0/real"
    assert listed["seg/split1/seed0/real+real_extra"] == ""  # the oracle draws real pool scans: no generator
    assert len(listed) == 11 and not any("pix2pix3d" in key or "spade" in key for key in listed)
    assert not (tmp_path / "toy_study" / "mlflow.db").exists()


def test_profiler_uses_the_declared_warmups_and_samplers(toy):
    from benchmark.profiling.measure import ProfilePoint
    from benchmark.profiling.model import build_model, memory_batch, sampling_times

    cfg = load_config(None)
    point = ProfilePoint(model="toy", shape=(16, 16, 16), batch_size=1, tiny=True, config=to_dict(cfg))
    model, n, overrides = build_model(point, cfg)
    assert overrides == {"l1_warmup": 0} and model.cfg.l1_warmup == 0 and model.cfg.width == 2
    values, reasons = sampling_times(model, memory_batch(point, n), torch.device("cpu"))
    assert model.calls == [{"sampler": "ddpm", "steps": 2}, {"sampler": "ddpm", "steps": None}]
    assert set(values) == {"sample_s", "sample_ddpm_s", "ddpm_steps"} and values["ddpm_steps"] == 2
    assert values["sample_s"] == values["sample_ddpm_s"] > 0
    assert set(reasons) == {"sample_ddim_s", "ddim_steps"}
