"""The shifted test sets of a robustness study, one family at a time.

A family (``robustness.families``) is one of:

* a corruption of :data:`benchmark.robustness.corruptions.CORRUPTIONS`: the split's test cases, corrupted at every
  severity of ``robustness.severities`` with a per-case seed (:func:`~benchmark.robustness.corruptions.case_seed`
  of ``robustness.seed`` and the case id), so every arm, split and training seed is scored on the same volumes;
* ``site``: the phantom rendered by scanner profile B (``benchmark/data/phantom_sites.py``). Site B scans the same
  patients as the study's site A, so only the split's test patients are evaluated (the training patients' site-B
  scans show the training anatomy). One level, severity 1;
* ``external``: an external test set (``robustness.external.path`` / ``.kind``, any supported layout) brought to the
  study grid by the study's preprocessing; every case of it is evaluated with every segmenter. One level.

The two dataset shifts go through the same adapters, checks and caches as the study's own data
(:func:`prepare_shift`), so a bad external set gets the same one-line errors as a bad main dataset.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace

import numpy as np

from benchmark.config import DataConfig, StudyConfig
from benchmark.data.manifest import Manifest
from benchmark.errors import ConfigError
from benchmark.robustness.corruptions import CORRUPTIONS, case_seed, corrupt

SITE, EXTERNAL = "site", "external"
DATASET_SHIFTS = (SITE, EXTERNAL)

TestCase = tuple[np.ndarray, np.ndarray, tuple[float, float, float]]  # (image, label, spacing), as evaluate_cases


def shift_severities(cfg: StudyConfig, family: str) -> tuple[int, ...]:
    """The severities a family is evaluated at: ``robustness.severities`` for corruptions, ``(1,)`` otherwise.

    Args:
        cfg: the study config.
        family: a shift family.
    """
    if family in CORRUPTIONS:
        return tuple(int(s) for s in cfg.robustness.severities)
    if family in DATASET_SHIFTS:
        return (1,)
    choices = ", ".join([*CORRUPTIONS, *DATASET_SHIFTS])
    raise ConfigError(f"robustness.families: {family!r} is unknown; choices: {choices}")


def check_families(cfg: StudyConfig) -> None:
    """Fail before any job runs when a family cannot be built for this study's data.

    Args:
        cfg: the study config (``robustness`` and ``data`` sections).
    """
    for family in cfg.robustness.families:
        shift_severities(cfg, family)
    if SITE in cfg.robustness.families and cfg.data.kind != "phantom":
        raise ConfigError(
            f"robustness.families: 'site' is the phantom's scanner profile B and needs data.kind=phantom (this study's "
            f"data.kind is {cfg.data.kind}); for real data use an external test set (--external-test PATH "
            "--external-kind KIND)"
        )


def shift_data(cfg: StudyConfig, family: str) -> DataConfig:
    """The data section a dataset shift is imported with.

    Args:
        cfg: the study config.
        family: ``site`` or ``external``.

    Returns:
        ``site``: the study's phantom with ``site=B``; ``external``: the external layout and folder, with the
        study's cache folder and wall settings (its own spacing checks come from its layout).
    """
    if family == SITE:
        return replace(cfg.data, phantom=replace(cfg.data.phantom, site="B"))
    if family == EXTERNAL:
        ext = cfg.robustness.external
        if not (ext.path and ext.kind):
            raise ConfigError("robustness.external: needs path and kind (--external-test PATH --external-kind KIND)")
        return DataConfig(
            kind=ext.kind,
            root=ext.path,
            cache_dir=cfg.data.cache_dir,
            wall_mode=cfg.data.wall_mode,
            wall_thickness_mm=cfg.data.wall_thickness_mm,
        )
    raise ConfigError(f"robustness.families: {family!r} is not a dataset shift ({', '.join(DATASET_SHIFTS)})")


def list_external(cfg: StudyConfig) -> list[str]:
    """The external test set's case ids from file names alone (no voxel read): the check a login node can make.

    Args:
        cfg: the study config (``robustness.external``).

    Returns:
        The case ids; an unusable folder or layout raises a one-line ``DataError``/``ConfigError``.
    """
    from benchmark.data.adapters import list_cases

    return list_cases(shift_data(cfg, EXTERNAL))


def prepare_shift(cfg: StudyConfig, family: str) -> Manifest:
    """Import and preprocess one dataset shift (cached beside the study's data; concurrent builders are safe).

    Args:
        cfg: the study config (its ``preprocess`` section brings the shift to the study grid).
        family: ``site`` or ``external``.

    Returns:
        The preprocessed dataset's ``Manifest``.
    """
    from benchmark.data.pipeline import prepare_dataset

    return prepare_dataset(replace(cfg, data=shift_data(cfg, family)))


def prepare_shifts(cfg: StudyConfig) -> dict[str, Manifest]:
    """Check and prepare every dataset shift the study's robustness section names (nothing when disabled).

    Args:
        cfg: the study config.

    Returns:
        family -> its preprocessed ``Manifest``.
    """
    if not cfg.robustness.enabled:
        return {}
    check_families(cfg)
    return {f: prepare_shift(cfg, f) for f in cfg.robustness.families if f in DATASET_SHIFTS}


def external_spacing(cfg: StudyConfig) -> tuple[float, float, float] | None:
    """The voxel size the external set's layout is known to have (for the identity-spacing check of HD95)."""
    from benchmark.data.adapters import ADAPTERS

    return getattr(ADAPTERS.get(cfg.robustness.external.kind or ""), "expected_spacing", None)


def _cases(manifest: Manifest, ids: Sequence[str] | None) -> dict[str, TestCase]:
    from benchmark.data.pipeline import load_arrays

    spacing = {c.case_id: tuple(float(s) for s in c.spacing) for c in manifest.cases}
    return {c: (a.image, a.label, spacing[c]) for c, a in load_arrays(manifest, ids).items()}


def clean_cases(manifest: Manifest, ids: Sequence[str]) -> dict[str, TestCase]:
    """The study's (clean) test cases.

    Args:
        manifest: the study's preprocessed dataset.
        ids: the split's test case ids.

    Returns:
        case id -> ``(image, label, spacing)``.
    """
    return _cases(manifest, ids)


def shifted_sets(
    cfg: StudyConfig, family: str, clean: Mapping[str, TestCase], severities: Sequence[int], seed: int
) -> Iterator[tuple[int, dict[str, TestCase]]]:
    """The shifted test sets of one family, one severity at a time.

    Args:
        cfg: the study config.
        family: a corruption, ``site`` or ``external``.
        clean: the split's clean test cases (``clean_cases``).
        severities: the severities to yield (dataset shifts: ``(1,)``).
        seed: the robustness seed behind every case's corruption seed.

    Yields:
        ``(severity, {case id: (image, label, spacing)})``; labels and spacing are the clean cases' (corruptions)
        or the shifted dataset's own.
    """
    if family == SITE:
        yield 1, _cases(prepare_shift(cfg, SITE), sorted(clean))
        return
    if family == EXTERNAL:
        yield 1, _cases(prepare_shift(cfg, EXTERNAL), None)
        return
    for severity in map(int, severities):
        seeds = {c: case_seed(seed, c) for c in clean}
        yield severity, {c: (corrupt(im, family, severity, seeds[c]), lab, sp) for c, (im, lab, sp) in clean.items()}
