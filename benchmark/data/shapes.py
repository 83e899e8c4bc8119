"""Geometric primitives for the phantom: inside tests for ellipsoids and capsules painted within their bounding
box, rays, rotations and smooth random fields. Points are world coordinates (mm) of shape (..., 3)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.spatial.transform import Rotation


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    return Rotation.from_euler("xyz", rng.uniform(-max_deg, max_deg, 3), degrees=True).as_matrix()


def frame(axis: np.ndarray) -> np.ndarray:
    """A rotation whose third column is ``axis`` (for ellipsoids with a long axis)."""
    a = unit(axis)
    helper = np.array([1.0, 0, 0]) if abs(a[0]) < 0.9 else np.array([0, 1.0, 0])
    u = unit(np.cross(helper, a))
    return np.stack([u, np.cross(a, u), a], axis=1)


def norm(v: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("...i,...i->...", v, v))  # faster than np.linalg.norm on (X, Y, Z, 3)


def box(pts: np.ndarray, lo, hi) -> tuple[slice, slice, slice]:
    """The sub-grid of ``pts`` (X, Y, Z, 3) covering world coordinates [lo, hi] (shapes are tested only there)."""
    out = []
    for i in range(3):
        axis = pts[(0,) * i + (slice(None),) + (0,) * (2 - i) + (i,)]
        out.append(slice(int(np.searchsorted(axis, lo[i])), int(np.searchsorted(axis, hi[i], side="right"))))
    return tuple(out)


def ellipsoid(pts: np.ndarray, centre, radii, rot=None, bumps=()) -> np.ndarray:
    """Inside test for points (..., 3); ``bumps`` = (direction, amplitude, width) modulating the radius."""
    q = pts - np.asarray(centre, dtype=np.float32)
    if rot is not None:
        q = q @ np.asarray(rot, dtype=np.float32)  # world -> local (rot's columns are the local axes)
    q = q / np.asarray(radii, dtype=np.float32)
    rho = norm(q)
    limit = np.ones_like(rho)
    if bumps:
        n = q / np.maximum(rho, 1e-9)[..., None]
        for direction, amp, width in bumps:
            limit = limit + amp * np.exp((n @ np.asarray(direction, dtype=np.float32) - 1.0) / width)
    return rho < limit


def capsule(pts: np.ndarray, a, b, radius: float) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    ab = b - a
    t = np.clip(((pts - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return norm(pts - (a + t[..., None] * ab)) < radius


def fill(tissue: np.ndarray, pts: np.ndarray, value: int, kind: str, *args, where=None, **kw) -> np.ndarray:
    """Paint ``value`` where an ellipsoid/capsule test holds, testing only its bounding box; returns the mask."""
    if kind == "ellipsoid":
        centre, radii = np.asarray(args[0]), np.asarray(args[1])
        reach = float(np.max(radii)) * (1.0 + sum(max(b[1], 0.0) for b in kw.get("bumps", ())))
        lo, hi = centre - reach, centre + reach
        test = ellipsoid
    else:
        a, b, r = np.asarray(args[0]), np.asarray(args[1]), args[2]
        lo, hi = np.minimum(a, b) - r, np.maximum(a, b) + r
        test = capsule
    sub = box(pts, lo, hi)
    mask = np.zeros(tissue.shape, dtype=bool)
    mask[sub] = test(pts[sub], *args, **kw)
    if where is not None:
        mask &= where
    if value >= 0:
        tissue[mask] = value
    return mask


def ray_exit(inside, centre: np.ndarray, direction: np.ndarray, max_mm: float = 80.0) -> float:
    """Distance along a ray from ``centre`` at which ``inside`` first turns False."""
    ts = np.arange(0.0, max_mm, 0.25)
    hits = inside(centre + ts[:, None] * direction)
    return float(ts[np.argmin(hits)]) if not hits.all() else max_mm


def smooth_noise(rng: np.random.Generator, shape, spacing, sigma_mm: float) -> np.ndarray:
    """Unit-variance Gaussian-filtered white noise, drawn directly in Fourier space (periodic, fast)."""
    gain = _gaussian_gain(tuple(shape), tuple(spacing), float(sigma_mm))
    spec = rng.standard_normal(gain.shape, dtype=np.float32) + 1j * rng.standard_normal(gain.shape, dtype=np.float32)
    field = np.fft.irfftn(spec * gain, s=tuple(shape)).astype(np.float32)
    return (field - field.mean()) / (field.std() + 1e-12)


@lru_cache(maxsize=16)
def _gaussian_gain(shape: tuple, spacing: tuple, sigma_mm: float) -> np.ndarray:
    freqs = [np.fft.fftfreq(n, d=sp) for n, sp in zip(shape[:-1], spacing[:-1], strict=True)]
    freqs.append(np.fft.rfftfreq(shape[-1], d=spacing[-1]))
    f2 = sum(np.square(f).reshape([-1 if i == k else 1 for i in range(3)]) for k, f in enumerate(freqs))
    return np.exp(-2.0 * np.pi**2 * sigma_mm**2 * f2).astype(np.float32)
