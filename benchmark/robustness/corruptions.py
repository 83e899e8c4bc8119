"""MRI corruptions at graded severities: the shifted test sets of the robustness study.

Each corruption is a pure function ``(volume, severity, seed) -> volume``: float32, the same (X, Y, Z) grid, so the
test set's label maps stay valid unchanged (the truth is the anatomy, not its degraded image). The severity picks
fixed parameters from :data:`LEVELS` (severity 1 is mild, 3 is strong); the seed picks only what a real
acquisition would leave to chance (the noise draw, the bias field's shape, the motion's directions and timing), and
the same seed draws the same pattern at every severity, scaled by the severity's magnitude. Use
:func:`case_seed` so that every segmenter is scored on the same corrupted volume of a case.

Intensity-scaled parameters (noise standard deviation) are fractions of the volume's robust range (99.5th minus
0.5th percentile), so a severity means the same on raw scanner units and on normalised volumes.

Families (library; parameter at severity 1 / 2 / 3):

* ``noise``: MONAI ``RandRicianNoise`` with a fixed (not sampled) std of 3 / 6 / 12 % of the range.
* ``bias_field``: MONAI ``RandBiasField`` (degree 3), coefficients uniform in +-0.05 / 0.1 / 0.2 (one draw, scaled).
* ``blur``: MONAI ``GaussianSmooth``, sigma 0.6 / 1.0 / 1.6 voxels.
* ``gamma``: MONAI ``AdjustContrast``, gamma 1.3 / 1.7 / 2.5.
* ``gibbs``: MONAI ``GibbsNoise`` (k-space truncation: resolution loss with ringing), alpha 0.4 / 0.6 / 0.8.
* ``motion``: TorchIO ``Motion`` (Shaw et al. 2019: k-space segments of rigidly moved copies), two movements of
  up to 1 / 3 / 8 degrees and 0.3 / 1 / 3 voxels; the still centre of k-space 80 / 60 / 40 % of its extent.
* ``ghosting``: TorchIO ``Ghosting`` (every 4th k-space plane along axis 1 damped), intensity 0.3 / 0.6 / 0.9.
* ``slice_thickness``: MONAI ``Resize`` (area average down along z, trilinear back), slices 2 / 3 / 4 times
  thicker.

MONAI has no motion or ghosting simulation; TorchIO's are the reference implementation, used with explicit
parameters (its deterministic ``Motion`` and ``Ghosting``, not the ``Random*`` variants). ``ghosting``, ``blur``,
``gamma``, ``gibbs`` and ``slice_thickness`` involve no chance: their seed is accepted and ignored. Motion is
simulated on a 1 mm isotropic grid, so its translations are in voxels.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable

import numpy as np
import torch
from monai.transforms import AdjustContrast, GaussianSmooth, GibbsNoise, RandBiasField, RandRicianNoise, Resize

from benchmark.errors import ConfigError, DataError
from benchmark.metrics.features import check_volume

Corruption = Callable[[np.ndarray, int, int], np.ndarray]
SEVERITIES = (1, 2, 3)
GHOST_AXIS, GHOST_COUNT, GHOST_RESTORE = 1, 4, 0.02

LEVELS: dict[str, tuple] = {
    "noise": (0.03, 0.06, 0.12),
    "bias_field": (0.05, 0.1, 0.2),
    "blur": (0.6, 1.0, 1.6),
    "gamma": (1.3, 1.7, 2.5),
    "gibbs": (0.4, 0.6, 0.8),
    "motion": ((1.0, 0.3, 0.8), (3.0, 1.0, 0.6), (8.0, 3.0, 0.4)),
    "ghosting": (0.3, 0.6, 0.9),
    "slice_thickness": (2, 3, 4),
}


def level(name: str, severity: int):
    """The fixed parameter(s) of one corruption at one severity.

    Args:
        name: a family in :data:`LEVELS`.
        severity: 1..3.

    Returns:
        The family's parameter at that severity (see the module table).
    """
    if name not in LEVELS:
        raise ConfigError(f"corruption {name!r} is unknown; choices: {', '.join(LEVELS)}")
    if severity not in SEVERITIES:
        raise ConfigError(f"corruption {name}: severity {severity!r} is not one of {SEVERITIES}")
    return LEVELS[name][severity - 1]


def case_seed(seed: int, case_id: str) -> int:
    """A per-case seed (fixed by the study seed and the case id) under 2**32, as MONAI's random state needs.

    Args:
        seed: the study's robustness seed.
        case_id: the test case.

    Returns:
        The seed to pass to every corruption of that case.
    """
    return int(np.random.default_rng([seed, zlib.crc32(case_id.encode())]).integers(2**32))


def intensity_range(volume: np.ndarray) -> float:
    """The robust intensity range: 99.5th minus 0.5th percentile (> 0).

    Args:
        volume: a checked float32 volume.

    Returns:
        The range the intensity-scaled parameters are fractions of.
    """
    lo, hi = np.percentile(volume, [0.5, 99.5])
    if hi <= lo:
        raise DataError("corruption input", "volume is (nearly) constant: no intensity range to scale noise by")
    return float(hi - lo)


def _channel(volume: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None]


def _out(image) -> np.ndarray:
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    return np.ascontiguousarray(arr[0], dtype=np.float32)


def _stream(seed: int, name: str) -> int:
    return int(np.random.default_rng([seed, zlib.crc32(name.encode())]).integers(2**32))


def rician_noise(volume: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Rician noise (magnitude of complex Gaussian noise) with a fixed standard deviation per severity.

    Args:
        volume: (X, Y, Z) image.
        severity: 1..3.
        seed: the noise draw.

    Returns:
        The corrupted float32 volume.
    """
    std = level("noise", severity) * intensity_range(volume)
    noise = RandRicianNoise(prob=1.0, std=std, sample_std=False, relative=False)
    noise.set_random_state(seed=_stream(seed, "noise"))
    return _out(noise(_channel(volume)))


def bias_field(volume: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """A smooth multiplicative field ``exp(sum of Legendre polynomials up to degree 3)``.

    Args:
        volume: (X, Y, Z) image.
        severity: 1..3: the coefficient bound c (coefficients uniform in [-c, c]).
        seed: the field's shape (one draw, scaled by c at every severity).

    Returns:
        The corrupted float32 volume.
    """
    c = level("bias_field", severity)
    field = RandBiasField(degree=3, coeff_range=(-c, c), prob=1.0)
    field.set_random_state(seed=_stream(seed, "bias_field"))
    return _out(field(_channel(volume)))


def blur(volume: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Gaussian blur (resolution loss) with a fixed sigma in voxels; ``seed`` is unused.

    Args:
        volume: (X, Y, Z) image.
        severity: 1..3.
        seed: ignored (no chance involved).

    Returns:
        The corrupted float32 volume.
    """
    return _out(GaussianSmooth(sigma=level("blur", severity))(_channel(volume)))


def gamma(volume: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Gamma contrast change on the volume's min..max range; ``seed`` is unused.

    Args:
        volume: (X, Y, Z) image.
        severity: 1..3.
        seed: ignored (no chance involved).

    Returns:
        The corrupted float32 volume.
    """
    return _out(AdjustContrast(gamma=level("gamma", severity))(_channel(volume)))


def gibbs(volume: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Gibbs ringing: k-space truncated to a fraction ``1 - alpha`` of its extent; ``seed`` is unused.

    Args:
        volume: (X, Y, Z) image.
        severity: 1..3.
        seed: ignored (no chance involved).

    Returns:
        The corrupted float32 volume.
    """
    return _out(GibbsNoise(alpha=level("gibbs", severity))(_channel(volume)))


def _unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def motion(volume: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Rigid motion during the acquisition: k-space filled in segments from moved copies (TorchIO ``Motion``).

    Args:
        volume: (X, Y, Z) image.
        severity: 1..3: the largest rotation (degrees) and translation (voxels) of each of two movements, and the
            central share of k-space (along z) read before the first and after the second movement; the outer
            segments come from the moved copies. Both grow with severity, so the damage grows with it too (a
            random acquisition time lets a mild case damage more than a strong one).
        seed: the movements' rotation axes, directions and sizes (between half and all of the maximum).

    Returns:
        The corrupted float32 volume.
    """
    import torchio as tio  # SimpleITK behind it takes a second to import; only motion needs it

    max_deg, max_vox, centre = level("motion", severity)
    rng = np.random.default_rng(_stream(seed, "motion"))
    size = rng.uniform(0.5, 1.0, (2, 2))
    degrees = _unit_rows(rng, 2) * (size[:, :1] * max_deg)
    translation = _unit_rows(rng, 2) * (size[:, 1:] * max_vox)
    times = np.array([0.5 - centre / 2, 0.5 + centre / 2])  # still while the centre of k-space is read
    move = tio.Motion(degrees=degrees, translation=translation, times=times, image_interpolation="linear")
    return _out(move(_channel(volume)))


def ghosting(volume: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Ghosts along the phase-encoding axis (periodic k-space planes damped, TorchIO ``Ghosting``).

    Args:
        volume: (X, Y, Z) image.
        severity: 1..3: how much of every 4th k-space plane along axis 1 is removed.
        seed: ignored (no chance involved).

    Returns:
        The corrupted float32 volume.
    """
    import torchio as tio

    ghosts = tio.Ghosting(
        num_ghosts=GHOST_COUNT, axis=GHOST_AXIS, intensity=level("ghosting", severity), restore=GHOST_RESTORE
    )
    return _out(ghosts(_channel(volume)))


def slice_thickness(volume: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Thicker slices: averaged down along z by the severity's factor, then interpolated back to the same grid.

    Args:
        volume: (X, Y, Z) image.
        severity: 1..3: slices 2, 3 or 4 times thicker (at least one slice remains).
        seed: ignored (no chance involved).

    Returns:
        The corrupted float32 volume on the input grid (the label map stays valid).
    """
    x, y, z = volume.shape
    thick = Resize((x, y, max(1, round(z / level("slice_thickness", severity)))), mode="area")(_channel(volume))
    return _out(Resize((x, y, z), mode="trilinear")(thick))


CORRUPTIONS: dict[str, Corruption] = {
    "noise": rician_noise,
    "bias_field": bias_field,
    "blur": blur,
    "gamma": gamma,
    "gibbs": gibbs,
    "motion": motion,
    "ghosting": ghosting,
    "slice_thickness": slice_thickness,
}
SEEDED = ("noise", "bias_field", "motion")  # the families whose output depends on the seed


def corrupt(volume: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """Apply one corruption, after checking the volume (3D, finite) and the family and severity.

    Args:
        volume: (X, Y, Z) image.
        name: a family in :data:`CORRUPTIONS`.
        severity: 1..3.
        seed: see :func:`case_seed`.

    Returns:
        The corrupted float32 volume, the input's shape.
    """
    level(name, severity)
    arr = check_volume(volume, f"corruption {name}")
    out = CORRUPTIONS[name](arr, severity, seed)
    if out.shape != arr.shape or not np.isfinite(out).all():
        raise DataError(f"corruption {name}", f"severity {severity} gave shape {out.shape} or non-finite voxels")
    return out


def grid(families: Iterable[str] | None = None, severities: Iterable[int] = SEVERITIES) -> list[tuple[str, int]]:
    """The (family, severity) points of a robustness sweep, in registry then severity order.

    Args:
        families: the families to include (None: all of :data:`CORRUPTIONS`).
        severities: the severities to include.

    Returns:
        ``[(family, severity), ...]``; an unknown family or severity raises ``ConfigError``.
    """
    names = list(CORRUPTIONS) if families is None else list(families)
    points = [(n, s) for n in names for s in severities]
    for n, s in points:
        level(n, s)
    return points
