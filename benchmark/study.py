"""A study on disk: where every stage writes, and the data every job reads.

```
<output_dir>/<name>/
  config.yaml                      resolved config of the sweep
  splits.json                      written once, read by every job
  composite/<scope>/model.json     clustering fitted on the scope's training images; maps.npz for all cases
  generators/<scope>/<gen>/seed<s>/    checkpoints, config.yaml, done.json
  segmenters/<scope>/seed<s>/          the scope's real-only segmenter (a generator's consistency loss)
  samples/split<k>/<gen>/seed<s>/      samples.json + one NIfTI per training label map of split k
  quality/split<k>/<gen>/seed<s>/      per_case.csv, summary.json
  segmentation/split<k>/seed<s>/<arm>/ per_case.csv, arm.json, checkpoints, segmenter.pt
  robustness/split<k>/seed<s>/<arm>/<shift>/  robustness.csv (that segmenter on one family of shifted test sets)
  mlflow.db, mlartifacts/          the default tracking store (one machine only)
  report.html
```

``scope`` is where a generator's training patients come from: ``pool`` (disjoint_pool), ``split<k>``
(per_split) or ``all`` (shared); under per_split, ``split<k>@f<f>`` is the scope of a training-data fraction below 1
(``benchmark.segmentation.fractions``), sampled into ``samples/split<k>/<gen>/seed<s>@f<f>``.
"""

from __future__ import annotations

import dataclasses
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from benchmark.atomic import atomic_path
from benchmark.config import StudyConfig, config_hash, read_yaml, save_config, to_dict
from benchmark.data.composite import CompositeModel, composite_maps
from benchmark.data.manifest import Manifest
from benchmark.data.splits import SplitPlan, load_splits, make_splits, save_splits
from benchmark.errors import ConfigError, DataError
from benchmark.segmentation.fractions import fraction_cases, split_suffix, suffix


@dataclass
class Study:
    """Paths and cached data of one study (cheap to construct in every job)."""

    cfg: StudyConfig

    @property
    def root(self) -> Path:
        return self.cfg.study_dir.resolve()

    @property
    def splits_path(self) -> Path:
        return self.root / "splits.json"

    def scope(self, split: int | None) -> str:
        """The generator-training scope serving ``split`` under the configured protocol."""
        proto = self.cfg.splits.protocol
        if proto == "disjoint_pool":
            return "pool"
        if proto == "shared":
            return "all"
        if split is None:
            raise DataError(self.splits_path, "per_split protocol needs a split index")
        return f"split{split}"

    def scope_splits(self, scope: str) -> list[int]:
        """Splits whose synthetic volumes come from generators of ``scope``."""
        n = len(self.plan.splits)
        split = _scope_split(scope)
        return [split] if split is not None else list(range(n))

    def scope_train_cases(self, scope: str, seed: int) -> tuple[str, ...]:
        """A generator scope's training cases: the protocol's (``SplitPlan.generator_train_cases``), and for a
        fraction scope (``split<k>@f<f>``) only the fraction's patients of split ``k`` at ``seed``.

        Args:
            scope: ``pool``, ``split<k>``, ``split<k>@f<f>`` or ``all``.
            seed: the job's seed (it chooses a fraction's patients).
        """
        fraction = split_suffix(scope)[1]
        split = _scope_split(scope)
        if fraction == 1.0:
            return tuple(self.plan.generator_train_cases(split))
        return self.fraction_cases(int(split), seed, fraction)

    def fraction_cases(self, split: int, seed: int, fraction: float) -> tuple[str, ...]:
        """Split ``split``'s training cases of the patients kept at ``fraction`` and ``seed`` (nested, seeded)."""
        return fraction_cases(self.plan.splits[split], fraction, seed, self.patient_of)

    @cached_property
    def patient_of(self) -> dict[str, str]:
        """case id -> patient id."""
        return {c: pid for pid, cases in self.manifest.patients().items() for c in cases}

    def generator_dir(self, gen: str, scope: str, seed: int) -> Path:
        return self.root / "generators" / scope / gen / f"seed{seed}"

    def scope_segmenter_dir(self, scope: str, seed: int) -> Path:
        return self.root / "segmenters" / scope / f"seed{seed}"

    def samples_dir(self, gen: str, split: int, seed: int, fraction: float = 1.0) -> Path:
        """Samples of ``gen`` for split ``split``: under per_split a fraction below 1 has its own generator."""
        return self.root / "samples" / f"split{split}" / gen / f"seed{seed}{suffix(fraction)}"

    def quality_dir(self, gen: str, split: int, seed: int) -> Path:
        return self.root / "quality" / f"split{split}" / gen / f"seed{seed}"

    def seg_dir(self, split: int, seed: int, arm: str) -> Path:
        return self.root / "segmentation" / f"split{split}" / f"seed{seed}" / arm.replace(":", "_")

    def robust_dir(self, split: int, seed: int, arm: str, shift: str) -> Path:
        return self.root / "robustness" / f"split{split}" / f"seed{seed}" / arm.replace(":", "_") / shift

    # ----------------------------------------------------------------------------------------------- data

    @cached_property
    def manifest(self) -> Manifest:
        from benchmark.data.pipeline import prepare_dataset

        return prepare_dataset(self.cfg)

    @cached_property
    def plan(self) -> SplitPlan:
        return load_splits(self.splits_path, self.manifest.patients())

    @cached_property
    def arrays(self) -> dict:
        """case id -> CaseArrays (image, label, affine, patient_id) of the preprocessed dataset."""
        from benchmark.data.pipeline import load_arrays

        return load_arrays(self.manifest)

    def spacing(self, case_id: str) -> tuple[float, float, float]:
        return tuple(float(s) for s in self.manifest.by_id()[case_id].spacing)

    def composite(self, scope: str) -> tuple[CompositeModel, dict[str, np.ndarray]]:
        """Composite label maps of every case, from the clustering fitted on the scope's training images.

        Cached in ``composite/<scope>/`` (written by the driver before jobs start; jobs only read).
        """
        scope = _base_scope(scope)  # a fraction scope conditions on its split's maps (fitted on the split's images)
        folder = self.root / "composite" / scope
        model_path, maps_path = folder / "model.json", folder / "maps.npz"
        if model_path.is_file() and maps_path.is_file():
            with np.load(maps_path) as z:
                return CompositeModel.load(model_path), {k: z[k] for k in z.files}
        split = _scope_split(scope)
        fit_ids = list(self.plan.generator_train_cases(split))
        images = {c: a.image for c, a in self.arrays.items()}
        labels = {c: a.label for c, a in self.arrays.items()}
        model, maps = composite_maps(images, labels, fit_ids, self.cfg.composite)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(maps_path) as tmp:  # jobs started by hand may build the same scope at once
            np.savez_compressed(tmp, **maps)
        model.save(model_path)
        return model, maps

    def label_maps(self, scope: str, generator: str) -> tuple[int, dict[str, np.ndarray]]:
        """The label maps that condition ``generator`` in ``scope`` and their number of label values.

        Args:
            scope: the generator's training scope (``pool``, ``split<k>`` or ``all``).
            generator: a study generator name: a plain one gets the scope's (cached) composite maps, a variant its
                own, made on the spot (``spade_ldm@cavity_only``: the expert cavity and wall alone, nothing fitted).
        """
        from benchmark.generators import VARIANTS, split_generator_name

        _, variant = split_generator_name(generator)
        if variant is None:
            return self.cfg.composite.num_classes, self.composite(scope)[1]
        composite = dataclasses.replace(self.cfg.composite, **VARIANTS[variant])
        split = _scope_split(scope)
        images = {c: a.image for c, a in self.arrays.items()}
        labels = {c: a.label for c, a in self.arrays.items()}
        _, maps = composite_maps(images, labels, list(self.plan.generator_train_cases(split)), composite)
        return composite.num_classes, maps


def _base_scope(scope: str) -> str:
    """The scope without its fraction part (``split0@f0.5`` -> ``split0``)."""
    return split_suffix(scope)[0]


def _scope_split(scope: str) -> int | None:
    """The split of a ``split<k>`` scope (with or without a fraction part); None for ``pool`` and ``all``."""
    base = _base_scope(scope)
    return int(base.removeprefix("split")) if base.startswith("split") else None


def prepare_study(cfg: StudyConfig) -> Study:
    """Driver-side preparation: dataset cache, ``splits.json`` (once), composite maps for every scope, and the
    robustness study's shifted datasets when it is enabled.

    Nothing in the study folder is touched before the data checks pass and the folder is known to hold a study
    of the same data (``check_same_data``).

    Args:
        cfg: the resolved study config (also written to ``<study>/config.yaml``).

    Returns:
        The ``Study``, with manifest and plan loaded.
    """
    study = Study(cfg)
    writable_folder(cfg.data.cache_dir, f"data cache (data.cache_dir={cfg.data.cache_dir})")
    manifest = study.manifest  # data checks first: a failed launch leaves the study folder as it was
    check_same_data(study, manifest)
    if cfg.robustness.enabled:  # the site-B phantom and an external test set: checked as the study's own data
        from benchmark.robustness.shifts import prepare_shifts

        prepare_shifts(cfg)
    writable_folder(study.root, f"study folder (output_dir={cfg.output_dir}, name={cfg.name})")
    if cfg.splits.file:
        plan = load_splits(cfg.splits.file, manifest.patients())
        if plan.dataset_digest and plan.dataset_digest != manifest.digest():
            raise DataError(
                cfg.splits.file,
                f"was drawn from other data (manifest {plan.dataset_digest}; this run's data is {manifest.digest()})",
            )
        save_splits(plan, study.splits_path)
    elif not study.splits_path.exists():
        save_splits(make_splits(manifest.patients(), cfg.splits, manifest.digest()), study.splits_path)
    plan = study.plan
    if plan.protocol != cfg.splits.protocol or len(plan.splits) != cfg.splits.n_splits:
        raise DataError(
            study.splits_path,
            f"holds {len(plan.splits)} {plan.protocol} splits but the config asks "
            f"for {cfg.splits.n_splits} {cfg.splits.protocol} splits; use another study name "
            "or delete the file",
        )
    for scope in sorted({study.scope(s.index) for s in plan.splits}):
        study.composite(scope)
    save_config(cfg, study.root)
    return study


def check_same_data(study: Study, manifest: Manifest) -> None:
    """Fail when the study folder holds a study of other data (another dataset, or changed data or preprocessing).

    ``splits.json`` records the manifest digest of the data it was drawn from (files without one are judged by
    their case ids). Only reads: the earlier study's results and caches stay as they are.

    Args:
        study: the study whose folder is checked.
        manifest: the data this run uses.
    """
    if not study.splits_path.is_file():
        return
    earlier = load_splits(study.splits_path)  # no case check yet: the cases may be another dataset's
    digest = manifest.digest()
    cases = {c for s in earlier.splits for c in s.train_cases + s.test_cases} | set(earlier.pool_cases)
    if earlier.dataset_digest == digest or (not earlier.dataset_digest and cases <= set(manifest.by_id())):
        return
    cfg = study.cfg
    raise DataError(
        study.root,
        f"holds a study of other data: its splits.json was drawn from "
        f"{_describe_data(_earlier_data(study), earlier.dataset_digest or 'unknown')}, this run's data is "
        f"{_describe_data(to_dict(cfg.data), digest)}; start a new study with name=<new name> or "
        f"output_dir=<another folder> (or delete {study.root} to redo this one)",
    )


def _earlier_data(study: Study) -> dict:
    """The ``data`` section of the config the earlier run wrote into the study folder ({} when unreadable)."""
    try:
        data = read_yaml(study.root / "config.yaml").get("data")
    except ConfigError:
        return {}
    return data if isinstance(data, dict) else {}


def _describe_data(data: dict, digest: str) -> str:
    kind = data.get("kind") or "unknown kind"
    where = f" at {data['root']}" if data.get("root") else ""
    return f"{kind} data{where} (manifest digest {digest})"


def writable_folder(path: str | Path, what: str) -> Path:
    """Create a folder (with its parents) and check that a file can be written in it.

    Where the suite first creates an output location, an unusable one (no permission, a read-only or
    virtual file system, a file in the way) becomes a ``DataError`` naming the folder and the problem.

    Args:
        path: the folder.
        what: what the folder is and the setting that chose it, for the message
            (e.g. ``"study folder (output_dir=runs, name=default)"``).

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            problem = f"{blocker} is a file, not a folder"
        else:
            at = f" ({exc.filename})" if exc.filename and Path(exc.filename) != path else ""
            problem = f"{exc.strerror or exc}{at}"
        raise DataError(path, f"cannot create or write the {what}: {problem}") from None
    return path


def data_fingerprint(study: Study) -> dict[str, str]:
    """Tags naming the exact data and config behind a number."""
    return {"data_manifest": study.manifest.digest(), "study_config_hash": config_hash(study.cfg)}


def code_version() -> str:
    """The git commit of the suite (``unknown`` outside a checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
        return (out.stdout.strip() or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
