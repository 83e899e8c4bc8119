"""Scanner profiles of the phantom (``PhantomConfig.site``): the site the study trains on and an unseen one.

Site ``A`` is the phantom as it always was (its output and cache folder are unchanged). Site ``B`` scans the same
patients (the same anatomy in mm, the same case ids) on another scanner, as a site-shift test set that no model
trains on:

* contrast: an inversion time set about 30 ms short of the myocardium's null point, as with a fixed protocol TI
  instead of a per-patient TI scout. The myocardium and the LA wall are no longer nulled (0.07 -> 0.22,
  0.10 -> 0.24 against blood 0.62 -> 0.52), so the blood-to-wall contrast the segmenter leans on drops from about
  6:1 to about 2:1; scar and fat enhance less (1.05 -> 0.85, 0.95 -> 0.75).
* noise: 1.75 times the site-A noise level (``PhantomConfig.noise_sigma``, relative to blood), as with a smaller
  coil array or a faster sequence.
* geometry: a field of view 20 % wider in-plane on the same matrix (in-plane voxels 1.2 times larger) and slices
  1.6 times thicker (4 mm at the default 2.5 mm), with a wider point-spread along z (slice profile). The grid's
  shape stays ``PhantomConfig.shape``; preprocessing brings both sites to the study grid.

A robustness job evaluates a split's test patients on both sites (paired by case id); the site-B scans of that
split's training patients must not be used, as their anatomy is the training anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.config import PhantomConfig
from benchmark.errors import ConfigError


@dataclass(frozen=True)
class SiteProfile:
    """How one scanner renders the phantom's anatomy.

    Args:
        name: the ``PhantomConfig.site`` value.
        intensity: LGE intensity per tissue class in the phantom's order (AIR, SOFT, FAT, MUSCLE, LUNG, BONE, CSF,
            BLOOD, MYO, LA_WALL, SCAR); None = the phantom's own table (``phantom.INTENSITY``).
        noise_scale: factor on ``PhantomConfig.noise_sigma``.
        spacing_scale: factor per axis on ``PhantomConfig.spacing`` (the matrix stays ``PhantomConfig.shape``, so
            the field of view grows with it); the anatomy keeps its size in mm.
        psf_mm: Gaussian point-spread (partial volume) standard deviation per axis, mm.
    """

    name: str
    intensity: tuple[float, ...] | None
    noise_scale: float
    spacing_scale: tuple[float, float, float]
    psf_mm: tuple[float, float, float]


SITES: dict[str, SiteProfile] = {
    "A": SiteProfile("A", None, 1.0, (1.0, 1.0, 1.0), (0.7, 0.7, 0.7)),
    "B": SiteProfile(
        "B",
        (0.0, 0.24, 0.75, 0.22, 0.06, 0.45, 0.30, 0.52, 0.22, 0.24, 0.85),
        1.75,
        (1.2, 1.2, 1.6),
        (0.7, 0.7, 1.6),
    ),
}


def site_profile(cfg: PhantomConfig) -> SiteProfile:
    """The scanner profile of a phantom config.

    Args:
        cfg: the phantom section (``site``).

    Returns:
        The ``SiteProfile`` of ``cfg.site``.
    """
    if cfg.site not in SITES:
        raise ConfigError(f"phantom.site: {cfg.site!r} is not one of {', '.join(SITES)}")
    return SITES[cfg.site]


def scan_spacing(cfg: PhantomConfig) -> tuple[float, float, float]:
    """The voxel size (mm) of the scans a phantom config writes: ``spacing`` times the site's ``spacing_scale``.

    Args:
        cfg: the phantom section.

    Returns:
        (x, y, z) spacing in mm; site A returns ``cfg.spacing`` unchanged.
    """
    scale = site_profile(cfg).spacing_scale
    return tuple(float(v) * s for v, s in zip(cfg.spacing, scale, strict=True))
