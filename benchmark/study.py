"""A study on disk: where every stage writes, and the data every job reads.

```
<output_dir>/<name>/
  config.yaml                      resolved config of the sweep
  splits.json                      written once, read by every job
  composite/<scope>/model.json     clustering fitted on the scope's training images; maps.npz for all cases
  generators/<scope>/<gen>/seed<s>/    checkpoints, config.yaml, done.json
  samples/split<k>/<gen>/seed<s>/      samples.json + one NIfTI per training label map of split k
  quality/split<k>/<gen>/seed<s>/      per_case.csv, summary.json
  segmentation/split<k>/seed<s>/<arm>/ per_case.csv, arm.json, checkpoints
  mlflow.db, mlartifacts/          the default tracking store (one machine only)
  report.html
```

``scope`` is where a generator's training patients come from: ``pool`` (disjoint_pool), ``split<k>``
(per_split) or ``all`` (shared).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from benchmark.atomic import atomic_path
from benchmark.config import StudyConfig, config_hash, save_config
from benchmark.data.composite import CompositeModel, composite_maps
from benchmark.data.manifest import Manifest
from benchmark.data.splits import SplitPlan, load_splits, make_splits, save_splits
from benchmark.errors import DataError


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
        return [int(scope.removeprefix("split"))] if scope.startswith("split") else list(range(n))

    def generator_dir(self, gen: str, scope: str, seed: int) -> Path:
        return self.root / "generators" / scope / gen / f"seed{seed}"

    def samples_dir(self, gen: str, split: int, seed: int) -> Path:
        return self.root / "samples" / f"split{split}" / gen / f"seed{seed}"

    def quality_dir(self, gen: str, split: int, seed: int) -> Path:
        return self.root / "quality" / f"split{split}" / gen / f"seed{seed}"

    def seg_dir(self, split: int, seed: int, arm: str) -> Path:
        return self.root / "segmentation" / f"split{split}" / f"seed{seed}" / arm.replace(":", "_")

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
        folder = self.root / "composite" / scope
        model_path, maps_path = folder / "model.json", folder / "maps.npz"
        if model_path.is_file() and maps_path.is_file():
            with np.load(maps_path) as z:
                return CompositeModel.load(model_path), {k: z[k] for k in z.files}
        split = int(scope.removeprefix("split")) if scope.startswith("split") else None
        fit_ids = list(self.plan.generator_train_cases(split))
        images = {c: a.image for c, a in self.arrays.items()}
        labels = {c: a.label for c, a in self.arrays.items()}
        model, maps = composite_maps(images, labels, fit_ids, self.cfg.composite)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(maps_path) as tmp:  # jobs started by hand may build the same scope at once
            np.savez_compressed(tmp, **maps)
        model.save(model_path)
        return model, maps


def prepare_study(cfg: StudyConfig) -> Study:
    """Driver-side preparation: dataset cache, ``splits.json`` (once), composite maps for every scope.

    Args:
        cfg: the resolved study config (also written to ``<study>/config.yaml``).

    Returns:
        The ``Study``, with manifest and plan loaded.
    """
    study = Study(cfg)
    manifest = study.manifest  # data checks first: a failed launch leaves the study folder as it was
    study.root.mkdir(parents=True, exist_ok=True)
    if cfg.splits.file:
        plan = load_splits(cfg.splits.file, manifest.patients())
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
    if plan.dataset_digest and plan.dataset_digest != manifest.digest():
        raise DataError(study.splits_path, "was drawn from different data (manifest digest differs)")
    for scope in sorted({study.scope(s.index) for s in plan.splits}):
        study.composite(scope)
    save_config(cfg, study.root)
    return study


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
