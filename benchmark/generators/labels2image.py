"""labels2image: a zero-training baseline that paints a label map with per-label Gaussian intensities.

In the style of SynthSeg and TorchIO's ``LabelsToImage``, but with intensities fitted rather than random: one
stage ``fit`` reads batches of training pairs and accumulates, for every value of the composite label map, the
voxel count, sum and sum of squares of the image intensities, the squared deviations from each volume's own
label mean, and the sum and sum of squares of those per-volume means (and the training images' intensity range).
So every label gets a mean, a within-volume standard deviation (texture and noise) and a between-volume standard
deviation (contrast varies from scan to scan). No network is optimised; the statistics are frozen parameters, so
checkpoints, resume and several ranks work as for any generator (the per-batch sums are averaged over ranks,
which keeps every ratio exact).

Sampling, seeded by the sampling generator: each volume draws its label means ``mean[l] + between[l] * z``, each
voxel its intensity ``N(mean_l, within[l])``; then a Gaussian smoothing (partial volume at label edges; the
voxel noise is rescaled by the kernel's gain so that the within-label standard deviation stays the fitted one), a
smooth multiplicative bias field (``exp`` of coarse Gaussian control points, trilinearly upsampled, mean 1) and
additive Gaussian noise (relative to the training images' global standard deviation). The volume is finally
clipped to the training images' intensity range, so it is in the real volumes' normalisation (``[0, 1]`` after
``percentile``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.engine.contract import Stage, StepContext
from benchmark.errors import ConfigError, DataError
from benchmark.generators.base import Generator, GeneratorConfig
from benchmark.generators.guidance import device_generator

STATS = "stats"


@dataclass(kw_only=True)
class Labels2ImageConfig(GeneratorConfig):
    """Settings of ``labels2image`` (YAML section ``generators.labels2image``).

    ``steps`` are fitting batches (used when ``epochs`` is None); ``blur_sigma`` the Gaussian smoothing in voxels
    (0 = none); ``bias_std`` the standard deviation of the bias field's log at its ``bias_grid``-per-axis control
    points (0 = none); ``noise_std`` the additive noise relative to the training images' global std.
    """

    steps: int = 50
    blur_sigma: float = 0.5
    bias_std: float = 0.1
    bias_grid: int = 4
    noise_std: float = 0.05

    def __post_init__(self) -> None:
        if self.blur_sigma < 0 or self.bias_std < 0 or self.noise_std < 0:
            raise ConfigError("blur_sigma, bias_std and noise_std must be >= 0")
        if self.bias_grid < 2:
            raise ConfigError(f"bias_grid: {self.bias_grid} must be >= 2 control points per axis")

    @classmethod
    def tiny(cls) -> Labels2ImageConfig:
        """Two fitting steps and a coarse bias field, for contract tests on 16^3-32^3 volumes."""
        return cls(steps=2, bias_grid=2)


# columns of the per-label moments: voxels, their sum and sum of squares, squared deviations from their volume's
# label mean, volumes holding the label, the sum and the sum of squares of those volumes' label means
VOXELS, SUM, SUMSQ, WITHIN_SS, VOLUMES, MEANS, MEANS_SQ = range(7)


class _Stats(nn.Module):
    """The fitted statistics: ``moments`` (C, 7) per label (columns above), ``extremes`` (min, max), and ``fitted``
    (C, 3): mean, within- and between-volume std derived from the moments in float64 after every step (the engine
    leaves networks in float32 after training, too coarse to take the differences of the raw moments again)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.moments = nn.Parameter(torch.zeros(num_classes, 7, dtype=torch.float64), requires_grad=False)
        self.fitted = nn.Parameter(torch.zeros(num_classes, 3, dtype=torch.float64), requires_grad=False)
        inf = torch.tensor([math.inf, -math.inf], dtype=torch.float64)
        self.extremes = nn.Parameter(inf, requires_grad=False)


def _derive(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, within- and between-volume std per label from the raw moments (NaN for a label never seen)."""
    m = m.double()
    mean = m[:, SUM] / m[:, VOXELS]
    within = (m[:, WITHIN_SS] / m[:, VOXELS]).sqrt()
    volume_mean = m[:, MEANS] / m[:, VOLUMES]
    between = (m[:, MEANS_SQ] / m[:, VOLUMES] - volume_mean.square()).clamp_min(0.0).sqrt()
    return mean, within, between


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 1D Gaussian kernel (float64) of radius ``ceil(3 sigma)``.

    Args:
        sigma: standard deviation in voxels, > 0.
    """
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def smooth(volume: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of (B,1,X,Y,Z) volumes with replicated borders; ``sigma=0`` returns them."""
    if sigma <= 0:
        return volume
    k = gaussian_kernel(sigma).to(volume)
    r = (len(k) - 1) // 2
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = len(k)
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
        volume = F.conv3d(F.pad(volume, pad, mode="replicate"), k.reshape(shape))
    return volume


class Labels2Image(Generator):
    """The ``labels2image`` generator: networks ``stats`` (no trainable parameter), one stage ``fit``."""

    def __init__(self, cfg: Labels2ImageConfig, num_classes: int, shape: tuple[int, int, int]):
        if num_classes < 2:
            raise ConfigError(f"num_classes: labels2image needs at least 2 label values, got {num_classes}")
        self.cfg, self.num_classes, self.shape = cfg, num_classes, tuple(shape)
        self.networks: dict[str, nn.Module] = {STATS: _Stats(num_classes)}
        # the noise part of the intensity field is smoothed too: divide by the kernel's gain to keep its std
        k = gaussian_kernel(cfg.blur_sigma) if cfg.blur_sigma > 0 else torch.ones(1, dtype=torch.float64)
        self._noise_gain = float(k.pow(2).sum().sqrt()) ** 3

    def stages(self) -> list[Stage]:
        return [Stage("fit", (), self.cfg.steps)]

    def make_optimizer(self, name: str, params: list[nn.Parameter], total_steps: int) -> tuple[Any, Any]:
        raise ConfigError(f"labels2image fits statistics and optimises no network (asked for {name!r})")

    def train_step(self, ctx: StepContext, stage: Stage, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        stats = ctx.unwrapped(STATS)
        image = batch["image"].to(ctx.device).flatten(1).double()  # (B, N)
        label = batch["label"].to(ctx.device).flatten(1).long()
        if int(label.min()) < 0 or int(label.max()) >= self.num_classes:
            raise DataError("training label map", f"values outside 0..{self.num_classes - 1}")
        onehot = F.one_hot(label, self.num_classes).double()  # (B, N, C); sums by matmul: deterministic on a GPU
        count = onehot.sum(1)
        total, squares = (torch.einsum("bnc,bn->bc", onehot, v) for v in (image, image.square()))
        present = count > 0
        mean = torch.where(present, total / count.clamp_min(1), 0.0)
        within = (squares - mean * total).clamp_min(0.0)  # sum of squared deviations from the volume's label mean
        moments = torch.stack([count, total, squares, within, present.double(), mean, mean.square()], 2).sum(0)
        moments = ctx.mean_over_ranks(moments)  # mean of the ranks' sums: the ratios below are exact
        extremes = ctx.mean_over_ranks(torch.stack([image.min(), image.max()]))
        with torch.no_grad():
            stats.moments.add_(moments)
            stats.extremes[0] = stats.extremes[0].minimum(extremes[0])
            stats.extremes[1] = stats.extremes[1].maximum(extremes[1])
            stats.fitted.copy_(torch.stack(_derive(stats.moments), 1).nan_to_num(0.0))
        fitted = stats.moments[:, VOXELS] > 0
        mean, within_std, between_std = self.label_moments()
        return {
            "mean": mean[fitted].mean().float(),
            "within_std": within_std[fitted].mean().float(),
            "between_std": between_std[fitted].mean().float(),
        }

    def label_moments(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-label mean, within-volume and between-volume standard deviation, (C,) each (0 for an unseen label)."""
        fitted = self.networks[STATS].fitted.double()
        return fitted[:, 0], fitted[:, 1], fitted[:, 2]

    def global_moments(self) -> tuple[float, float]:
        """Mean and standard deviation of every fitted voxel, whatever its label."""
        total = self.networks[STATS].moments.double().sum(0)
        mean = total[SUM] / total[VOXELS]
        return float(mean), float((total[SUMSQ] / total[VOXELS] - mean.square()).clamp_min(0.0).sqrt())

    def state_extra(self) -> dict[str, Any]:
        return {}

    def load_state_extra(self, state: dict[str, Any]) -> None:
        pass

    def _fitted(self, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        present = torch.unique(label)
        if int(present.min()) < 0 or int(present.max()) >= self.num_classes:
            raise DataError("label map", f"values outside 0..{self.num_classes - 1}")
        unseen = [int(v) for v in present if not self.networks[STATS].moments[v, VOXELS] > 0]
        if unseen:
            raise DataError("label map", f"no fitted intensities for label(s) {unseen}: fit labels2image first")
        return tuple(t.float() for t in self.label_moments())

    def _bias_field(self, n: int, device: torch.device, gen: torch.Generator | None) -> torch.Tensor:
        g = self.cfg.bias_grid
        coarse = torch.randn((n, 1, g, g, g), generator=gen, device=device) * self.cfg.bias_std
        field = torch.exp(F.interpolate(coarse, size=self.shape, mode="trilinear", align_corners=True))
        return field / field.mean(dim=(2, 3, 4), keepdim=True)

    @torch.no_grad()
    def sample(self, label: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (B,1,X,Y,Z) float32 for label maps (B,1,X,Y,Z), in the training images' intensity range.

        Args:
            label: integer label maps with values the fit has seen (others raise ``DataError``).
            generator: seeds the intensities, the bias field and the noise.
        """
        device = self.networks[STATS].moments.device
        lab = label.to(device).long()
        mean, within, between = self._fitted(lab)
        gen = device_generator(generator, device)
        n = lab.shape[0]
        means = mean + between * torch.randn((n, self.num_classes), generator=gen, device=device)  # per volume
        voxel = torch.randn(lab.shape, generator=gen, device=device)
        field = means[torch.arange(n, device=device).view(n, 1, 1, 1, 1), lab] + within[lab] * voxel / self._noise_gain
        image = smooth(field, self.cfg.blur_sigma)
        image = image * self._bias_field(lab.shape[0], device, gen)
        noise = torch.randn(lab.shape, generator=gen, device=device)
        image = image + self.cfg.noise_std * self.global_moments()[1] * noise
        lo, hi = (float(v) for v in self.networks[STATS].extremes)
        return image.clamp(lo, hi).float()


def build(config: Labels2ImageConfig, num_classes: int, shape: tuple[int, int, int]) -> Labels2Image:
    """Build ``labels2image`` for label maps with values ``0..num_classes-1`` on a study grid ``shape``.

    Args:
        config: the generator's settings.
        num_classes: number of label values (composite maps: k + 2).
        shape: the study's (X, Y, Z).

    Returns:
        The unfitted ``Labels2Image``.
    """
    return Labels2Image(config, num_classes, shape)
