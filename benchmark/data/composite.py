"""Composite semantic label maps: the paper's Algorithm 1.

Expert labels (1 = LA cavity, 2 = LA wall) are kept; every other voxel gets a context label from k-means on
Gaussian-smoothed intensities:

1. smooth each image with a Gaussian (``sigma`` voxels);
2. fit k-means (k clusters) on the smoothed intensities of non-expert voxels of the *fitting* cases only
   (a split's training images), sampled to at most ``max_voxels`` with a fixed seed;
3. the background cluster is the one whose voxel set overlaps most (Jaccard index) with the zero-intensity
   voxels (intensity within ``zero_tol`` of the image minimum, i.e. air outside the body); it becomes label 0;
4. the remaining k - 1 clusters are relabelled 3, 4, ..., k + 1 in order of increasing centre intensity.

The fitted model (k centres + the background index) is a small JSON file, so maps for test cases are made with
a model that never saw them. ``k = 0`` fits nothing: the maps are the expert labels alone (values 0, 1, 2), the
conditioning of the paper's cavity-only ablation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from sklearn.cluster import KMeans

from benchmark.atomic import write_text_atomic
from benchmark.config import CompositeConfig
from benchmark.errors import ConfigError, DataError

ZERO_TOL = 0.02  # fraction of an image's intensity range counted as "zero intensity" (air)


@dataclass(frozen=True)
class CompositeModel:
    """A fitted clustering.

    Args:
        centers: k cluster centres (smoothed intensity), in k-means order.
        background: index into ``centers`` of the dropped background cluster (-1 without clusters, k = 0).
        sigma: smoothing used at fit time (applied again at predict time).
    """

    centers: tuple[float, ...]
    background: int
    sigma: float

    @property
    def k(self) -> int:
        return len(self.centers)

    def label_of_cluster(self) -> np.ndarray:
        """Map cluster index -> composite label (0 for background, 3.. by increasing intensity)."""
        order = [i for i in np.argsort(self.centers, kind="stable") if i != self.background]
        lut = np.zeros(self.k, dtype=np.uint8)
        for rank, idx in enumerate(order):
            lut[idx] = 3 + rank
        return lut

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        payload = {"centers": list(self.centers), "background": self.background, "sigma": self.sigma}
        return write_text_atomic(path, json.dumps(payload))

    @classmethod
    def load(cls, path: str | Path) -> CompositeModel:
        try:
            d = json.loads(Path(path).read_text())
            return cls(
                centers=tuple(float(c) for c in d["centers"]), background=int(d["background"]), sigma=float(d["sigma"])
            )
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(path, f"not a composite-map model ({exc})") from None


def _check_pair(image: np.ndarray, label: np.ndarray, case_id: str) -> None:
    if image.shape != label.shape:
        raise DataError(case_id, f"image shape {image.shape} != label shape {label.shape}")
    bad = np.setdiff1d(np.unique(label), [0, 1, 2])
    if bad.size:
        raise DataError(case_id, f"expert label values {bad.tolist()} outside the expected set [0, 1, 2]")


def _zero_mask(image: np.ndarray) -> np.ndarray:
    lo, hi = float(image.min()), float(image.max())
    return image <= lo + ZERO_TOL * (hi - lo)


def fit_composite(images: dict[str, np.ndarray], labels: dict[str, np.ndarray], cfg: CompositeConfig) -> CompositeModel:
    """Fit the context clustering on the given cases (a split's training cases only).

    Args:
        images: case id -> image (X, Y, Z) float.
        labels: case id -> expert label map with values in {0, 1, 2}.
        cfg: k, sigma, voxel budget and seed.

    Returns:
        The fitted ``CompositeModel``.
    """
    if cfg.k == 0:  # cavity and wall only: nothing to fit
        return CompositeModel(centers=(), background=-1, sigma=cfg.sigma)
    if not 2 <= cfg.k <= 10:
        raise ConfigError(f"composite.k: {cfg.k} is outside the allowed range 2..10 (or 0: cavity and wall only)")
    if not images:
        raise DataError("composite", "no cases to fit the clustering on")
    rng = np.random.default_rng(cfg.seed)
    per_case = max(1, cfg.max_voxels // len(images))
    values, zeros = [], []
    for cid in sorted(images):
        _check_pair(images[cid], labels[cid], cid)
        smooth = gaussian_filter(images[cid].astype(np.float64), cfg.sigma)
        keep = labels[cid] == 0
        v, z = smooth[keep], _zero_mask(images[cid])[keep]
        if v.size > per_case:
            idx = rng.choice(v.size, per_case, replace=False)
            v, z = v[idx], z[idx]
        values.append(v)
        zeros.append(z)
    x = np.concatenate(values)[:, None]
    zero = np.concatenate(zeros)
    if np.unique(x).size < cfg.k:
        raise DataError("composite", f"only {np.unique(x).size} distinct intensities for k={cfg.k} clusters")
    km = KMeans(n_clusters=cfg.k, n_init=4, random_state=cfg.seed).fit(x)
    assign = km.labels_
    jaccard = [
        np.logical_and(assign == c, zero).sum() / max(1, np.logical_or(assign == c, zero).sum()) for c in range(cfg.k)
    ]
    return CompositeModel(
        centers=tuple(float(c) for c in km.cluster_centers_[:, 0]),
        background=int(np.argmax(jaccard)),
        sigma=cfg.sigma,
    )


def apply_composite(model: CompositeModel, image: np.ndarray, label: np.ndarray, case_id: str = "case") -> np.ndarray:
    """Composite label map of one case: expert 1/2 kept, context voxels by nearest cluster centre.

    Args:
        model: a fitted clustering (possibly fitted on other cases).
        image: (X, Y, Z) image.
        label: expert label map {0, 1, 2} of the same shape.
        case_id: names the case in errors.

    Returns:
        uint8 map with 0 background, 1 cavity, 2 wall, 3..k+1 context clusters (only 0, 1, 2 for a k = 0 model).
    """
    _check_pair(image, label, case_id)
    if model.k == 0:
        return np.asarray(label, dtype=np.uint8).copy()
    smooth = gaussian_filter(image.astype(np.float64), model.sigma)
    centers = np.asarray(model.centers)
    nearest = np.abs(smooth[..., None] - centers).argmin(-1)
    out = model.label_of_cluster()[nearest]
    out[label == 1] = 1
    out[label == 2] = 2
    return out.astype(np.uint8)


def composite_maps(
    images: dict[str, np.ndarray], labels: dict[str, np.ndarray], fit_ids: list[str], cfg: CompositeConfig
) -> tuple[CompositeModel, dict[str, np.ndarray]]:
    """Fit on ``fit_ids`` and apply to every case given.

    Returns:
        The model and case id -> composite map.
    """
    missing = sorted(set(fit_ids) - set(images))
    if missing:
        raise DataError("composite", f"fitting cases not loaded: {missing[:5]}")
    model = fit_composite({c: images[c] for c in fit_ids}, {c: labels[c] for c in fit_ids}, cfg)
    return model, {cid: apply_composite(model, images[cid], labels[cid], cid) for cid in sorted(images)}


def k_selection(
    images: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    ks: range | list[int],
    cfg: CompositeConfig,
    *,
    sample: int = 4000,
):
    """Silhouette and Davies-Bouldin scores of the context clustering for each k (the paper's Fig. 2).

    Args:
        images: case id -> image (the cases the clustering would be fitted on).
        labels: case id -> expert labels (their voxels are left out, as in Algorithm 1).
        ks: values of k to score (2..10).
        cfg: smoothing and seed (``cfg.k`` is ignored).
        sample: voxels sampled for the scores (the silhouette is quadratic in it).

    Returns:
        A pandas DataFrame with columns k, silhouette (higher is better), davies_bouldin (lower is better).
    """
    import pandas as pd
    from sklearn.metrics import davies_bouldin_score, silhouette_score

    rng = np.random.default_rng(cfg.seed)
    values = np.concatenate(
        [gaussian_filter(images[c].astype(np.float64), cfg.sigma)[labels[c] == 0] for c in sorted(images)]
    )
    x = rng.choice(values, min(sample, values.size), replace=False)[:, None]
    rows = []
    for k in ks:
        if not 2 <= k <= 10:
            raise ConfigError(f"composite.k: {k} is outside the allowed range 2..10")
        assign = KMeans(n_clusters=k, n_init=4, random_state=cfg.seed).fit_predict(x)
        rows.append(
            {
                "k": k,
                "silhouette": float(silhouette_score(x, assign, random_state=cfg.seed)),
                "davies_bouldin": float(davies_bouldin_score(x, assign)),
            }
        )
    return pd.DataFrame(rows)
