"""What every registered metric receives (``EvalContext``) and returns (``MetricOutput``)."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.config import MetricsConfig
from benchmark.metrics.features import FeatureExtractor

SegmentFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class MetricOutput:
    """Per-case rows (case_id, metric, value, optional backbone; the job adds the other columns of
    ``benchmark.results.COLUMNS``) and set-level summary entries."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)


def entry(
    value: float,
    ci: tuple[float | None, float | None] = (None, None),
    *,
    n: int,
    backbone: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One summary entry: value, ci_low, ci_high, n, backbone (and any extra fields)."""
    return {"value": float(value), "ci_low": ci[0], "ci_high": ci[1], "n": int(n), "backbone": backbone, **extra}


@dataclass
class EvalContext:
    """The inputs of one evaluation; features are extracted lazily, once per set.

    Args:
        real: case id -> real volume (the paired reference of the synthetic volume with the same id).
        synthetic: case id -> synthetic volume.
        labels: case id -> the label map that conditioned the synthetic volume.
        train_real: case id -> real training volume (memorisation reference).
        cfg: the metrics section.
        cache_dir: feature cache folder, or None.
        segment_fn: volume -> label map (a frozen real-only segmenter), for mask fidelity.
        device: where the feature network runs.
    """

    real: dict[str, np.ndarray]
    synthetic: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    train_real: dict[str, np.ndarray]
    cfg: MetricsConfig
    cache_dir: Path | None = None
    segment_fn: SegmentFn | None = None
    device: str = "cpu"

    @cached_property
    def extractor(self) -> FeatureExtractor:
        return FeatureExtractor(self.cfg, self.cache_dir, self.device)

    @property
    def backbone(self) -> str:
        return self.extractor.name

    @cached_property
    def real_features(self) -> tuple[list[str], np.ndarray]:
        return self.extractor.extract(self.real)

    @cached_property
    def synthetic_features(self) -> tuple[list[str], np.ndarray]:
        return self.extractor.extract(self.synthetic)

    @cached_property
    def train_features(self) -> tuple[list[str], np.ndarray]:
        return self.extractor.extract(self.train_real)

    def rng(self, name: str) -> np.random.Generator:
        """A generator seeded by ``cfg.seed`` and the metric's name, so metrics draw independent streams."""
        return np.random.default_rng([self.cfg.seed, zlib.crc32(name.encode())])
