"""The data path in two calls: ``prepare_dataset`` (import + preprocess, cached) and ``load_arrays``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from benchmark.config import StudyConfig
from benchmark.data.adapters import import_dataset
from benchmark.data.manifest import MANIFEST_NAME, Manifest
from benchmark.data.preprocess import load_case, prepare
from benchmark.errors import DataError


@dataclass(frozen=True)
class CaseArrays:
    """One preprocessed case in memory."""

    image: np.ndarray  # float32 (X, Y, Z)
    label: np.ndarray  # uint8 (X, Y, Z), 0/1/2
    affine: np.ndarray  # 4x4
    patient_id: str


def prepare_dataset(cfg: StudyConfig) -> Manifest:
    """Import the configured dataset (phantom or a public layout) and bring it to the study grid.

    Both steps are cached under ``cfg.data.cache_dir`` (relative paths are taken from the working folder).
    The returned manifest carries the imported dataset's ``patient_source`` and ``notes`` (caveats a report must
    state, e.g. that a dataset holding several scans per patient names no patients).

    Args:
        cfg: the study config (``data`` and ``preprocess`` sections).

    Returns:
        The preprocessed dataset's ``Manifest``.
    """
    cache = Path(cfg.data.cache_dir)
    raw = import_dataset(cfg.data, cache)
    return replace(prepare(raw, cfg.preprocess, cache), patient_source=raw.patient_source, notes=raw.notes)


def load_arrays(manifest: Manifest, case_ids: list[str] | tuple[str, ...] | None = None) -> dict[str, CaseArrays]:
    """Read cases into memory.

    Args:
        manifest: a dataset in the internal layout (usually the preprocessed one).
        case_ids: which cases (in this order); None for all.

    Returns:
        case id -> ``CaseArrays``.
    """
    cases = manifest.by_id()
    wanted = list(case_ids) if case_ids is not None else [c.case_id for c in manifest.cases]
    unknown = [c for c in wanted if c not in cases]
    if unknown:
        raise DataError(manifest.root / MANIFEST_NAME, f"unknown case id(s) {', '.join(unknown[:10])}")
    out = {}
    for case_id in wanted:
        image, label, affine = load_case(manifest, cases[case_id])
        out[case_id] = CaseArrays(image=image, label=label, affine=affine, patient_id=cases[case_id].patient_id)
    return out
