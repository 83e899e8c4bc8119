#!/usr/bin/env python
"""Do FID, KID and MMD rank degradations correctly on phantom data?

Real set A and real set B are the first scans of two disjoint halves of the phantom's patients. Each metric is
computed for A against: B (real vs real, different patients), B blurred (Gaussian, sigma in voxels) and uniform
noise over the normalised intensity range. The expected ordering is A-B < A-blurred < A-noise; the exit code is 0
when it holds for FID, KID and the dot-product MMD (see REQUIRED). A fourth column, white noise with B's voxel
mean and std, is a harder control reported without an expected rank.

Example: ``python benchmarks/metric_ordering.py --patients 40 --backbone resnet34``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage  # noqa: E402

from benchmark.config import MetricsConfig, PhantomConfig  # noqa: E402
from benchmark.data.io import load_volume  # noqa: E402
from benchmark.data.phantom import generate_phantom  # noqa: E402
from benchmark.metrics.evaluate import evaluate_generator  # noqa: E402

METRIC_KEYS = ("fid", "fid_at_n", "kid", "kid_at_n", "mmd", "mmd_rbf")
# the Gaussian-kernel MMD is bounded: once both degraded sets are several bandwidths from A the cross term
# vanishes and the value measures only the degraded set's own spread, so its blur/noise rank is not required
REQUIRED = ("fid", "fid_at_n", "kid", "kid_at_n", "mmd")
SHAPE = (48, 48, 24)  # the default study grid, drawn directly at that size (80 mm field of view)


def _normalise(v: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(v, [0.5, 99.5])
    return np.clip((v - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def phantom_sets(n_patients: int, cache_dir: str | Path, seed: int = 0) -> tuple[dict, dict]:
    """First scans of two disjoint halves of the phantom's patients, percentile-normalised to [0, 1]."""
    spacing = tuple(80.0 / s for s in SHAPE)
    cfg = PhantomConfig(n_patients=n_patients, scans_per_patient=(1, 1), shape=SHAPE, spacing=spacing, seed=seed)
    manifest = generate_phantom(cfg, cache_dir)
    first = sorted((c for c in manifest.cases if c.case_id.endswith("_s1")), key=lambda c: c.patient_id)
    vols = {c.case_id: _normalise(load_volume(manifest.path(c, "image")).array) for c in first}
    ids = sorted(vols)
    half = len(ids) // 2
    return {i: vols[i] for i in ids[:half]}, {i: vols[i] for i in ids[half:]}


def degraded_sets(b: dict, *, blur_sigma: float, seed: int = 0) -> dict[str, dict]:
    """B itself, B blurred, uniform noise over the normalised range [0, 1], and (a harder control) Gaussian
    white noise with B's voxel mean and std."""
    rng = np.random.default_rng(seed)
    stack = np.stack(list(b.values()))
    mean, std = float(stack.mean()), float(stack.std())
    return {
        "real_B": b,
        "blurred_B": {k: ndimage.gaussian_filter(v, blur_sigma).astype(np.float32) for k, v in b.items()},
        "noise": {k: rng.random(v.shape, dtype=np.float32) for k, v in b.items()},
        "noise_matched": {k: (mean + std * rng.standard_normal(v.shape)).astype(np.float32) for k, v in b.items()},
    }


def measure(a: dict, others: dict[str, dict], cfg: MetricsConfig, cache_dir: Path | None) -> dict[str, dict]:
    """Distribution metrics of A against each other set: {set name: {metric: summary entry}}."""
    out = {}
    for name, vols in others.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # FID from N < F samples: expected here
            _, summary = evaluate_generator(a, vols, {}, {}, cfg, cache_dir=cache_dir)
        out[name] = {k: summary[k] for k in METRIC_KEYS if k in summary}
    return out


def ordering_holds(results: dict[str, dict], key: str) -> bool:
    """A-B < A-blurred < A-noise for one metric."""
    v = [results[s][key]["value"] for s in ("real_B", "blurred_B", "noise")]
    return v[0] < v[1] < v[2]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=40)
    p.add_argument("--backbone", default="resnet34", choices=["resnet10", "resnet34", "resnet50"])
    p.add_argument("--feature-mode", default="3d", choices=["3d", "2.5d"])
    p.add_argument("--blur-sigma", type=float, default=1.5)
    p.add_argument("--bootstrap", type=int, default=100)
    p.add_argument("--cache-dir", default="runs/cache")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    a, b = phantom_sets(args.patients, args.cache_dir)
    n = len(a)
    cfg = MetricsConfig(
        backbone=args.backbone,
        feature_mode=args.feature_mode,
        metrics=("fid", "kid", "mmd", "mmd_rbf"),
        bootstrap=args.bootstrap,
        kid_subset_size=min(10, n),
        fixed_n=min(10, n),
    )
    results = measure(a, degraded_sets(b, blur_sigma=args.blur_sigma), cfg, Path(args.cache_dir) / "features")
    backbone = results["real_B"]["fid"]["backbone"]
    print(f"phantom: {n} + {len(b)} patients, {SHAPE}, backbone {backbone}, {time.perf_counter() - start:.0f} s")
    names = ("real_B", "blurred_B", "noise", "noise_matched")
    print(f"{'metric':10s}" + "".join(f" {'A vs ' + s:>31s}" for s in names) + "  ordering")
    for key in METRIC_KEYS:
        cells = []
        for s in names:
            e = results[s][key]
            ci = f" [{e['ci_low']:.3g}, {e['ci_high']:.3g}]" if e["ci_low"] is not None else ""
            cells.append(f"{e['value']:.4g}{ci}")
        print(f"{key:10s}" + "".join(f" {c:>31s}" for c in cells) + f"  {ordering_holds(results, key)}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all(ordering_holds(results, k) for k in REQUIRED) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
