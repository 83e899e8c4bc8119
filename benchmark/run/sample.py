"""Sample new label maps with the generator of a finished generator job (``launchers/sample.py``).

The job logged its trained networks and settings as the run's ``generator/`` artifacts
(``benchmark.generators.export``); they are fetched from the tracking server, or from the study folder's own store,
into a temporary folder, the generator is rebuilt, every label map is checked against it (shape, label values) and
only then sampled: ``<out>/samples/<case>.nii.gz`` (``samples/copy<k>/`` for ``--n`` above 1), each with its label
map's affine, then ``samples.json`` and ``montage.png``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmark.data.io import load_label
from benchmark.errors import ConfigError, DataError, TrackingError
from benchmark.generators.base import Generator
from benchmark.generators.export import ARTIFACT_DIR, WEIGHTS, load_generator
from benchmark.generators.train import sample_to_disk
from benchmark.tracking.runs import download_artifact, find_run, run_artifacts
from benchmark.tracking.tracker import check_reachable, default_uri

NIFTI = (".nii.gz", ".nii")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line of ``launchers/sample.py``."""
    p = argparse.ArgumentParser(description="Sample label maps with the generator of a finished generator run.")
    p.add_argument("--run", required=True, help="run id or run name (e.g. gen/pool/spade_ldm/seed0)")
    p.add_argument("--labels", required=True, type=Path, help="folder of NIfTI label maps (*.nii.gz, *.nii)")
    p.add_argument("--out", required=True, type=Path, help="folder for the synthetic volumes")
    p.add_argument("--n", type=int, default=1, help="volumes per label map (default 1)")
    p.add_argument("--sampler", default=None, help="an iterative sampler the generator declares (e.g. ddim)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the generator's own)")
    p.add_argument("--seed", type=int, default=0, help="seeds each label map's noise (default 0)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--tracking-uri", default=None, help="MLflow server, e.g. http://127.0.0.1:5000")
    where.add_argument("--study", type=Path, default=None, help="study folder (its own mlflow.db store)")
    return p.parse_args(argv)


def store_uri(tracking_uri: str | None, study: Path | None) -> str:
    """The tracking URI to read: ``--tracking-uri`` as given, else the study folder's sqlite store (which must exist).

    Args:
        tracking_uri: the ``--tracking-uri`` flag.
        study: the ``--study`` flag.
    """
    if tracking_uri:
        check_reachable(tracking_uri)
        return tracking_uri
    if study is None or not (study / "mlflow.db").is_file():
        raise DataError(
            study or "--study", "holds no tracking store (mlflow.db); pass a study folder or --tracking-uri"
        )
    return default_uri(study)


def label_files(folder: Path) -> dict[str, Path]:
    """Case id -> NIfTI file of every label map in ``folder`` (``la_003.nii.gz`` -> ``la_003``), sorted."""
    if not folder.is_dir():
        raise DataError(folder, "--labels: folder not found")
    found = {p.name[: -len(s)]: p for p in sorted(folder.iterdir()) for s in NIFTI if p.name.endswith(s)}
    if not found:
        raise DataError(folder, "--labels: holds no NIfTI label maps (*.nii.gz, *.nii)")
    return found


def read_labels(files: dict[str, Path], num_classes: int, shape: tuple[int, ...]) -> tuple[dict, dict]:
    """Read and check every label map against the generator: its training shape and label values.

    Args:
        files: case id -> label map file.
        num_classes: label values the generator was trained on (``0..num_classes-1``).
        shape: its training shape (X, Y, Z).

    Returns:
        ``(labels, affines)``, both keyed by case id.
    """
    labels, affines = {}, {}
    for case_id, path in files.items():
        try:
            vol = load_label(path, {v: v for v in range(num_classes)})
        except DataError as exc:
            raise DataError(exc.path, f"{exc.problem} (the generator was trained on {num_classes} classes)") from None
        if tuple(vol.array.shape) != tuple(shape):
            raise DataError(path, f"shape {tuple(vol.array.shape)} differs from the generator's training shape "
                                  f"{tuple(shape)}; resample the label map to it")  # fmt: skip
        labels[case_id], affines[case_id] = np.asarray(vol.array, dtype=np.int64), vol.affine
    return labels, affines


class _WithSampler:
    """A generator whose ``sample`` uses a chosen sampler and step count (what ``sample_to_disk`` calls)."""

    def __init__(self, generator: Generator, sampler: str, steps: int):
        self.generator, self.cfg, self.networks = generator, generator.cfg, generator.networks
        self.sampler, self.steps = sampler, steps

    def sample(self, label: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.generator.sample(label, generator=generator, sampler=self.sampler, steps=self.steps)


def with_sampler(generator: Generator, name: str, sampler: str | None, steps: int | None):
    """``generator`` itself, or wrapped to sample with ``--sampler``/``--steps`` (samplers its config declares)."""
    declared = generator.cfg.samplers()
    if sampler is None and steps is None:
        return generator
    if not declared:
        raise ConfigError(f"--sampler/--steps: generator {name} samples in one pass (it has no samplers)")
    sampler = sampler or generator.cfg.default_sampler()
    if sampler not in declared:
        have = ", ".join(sorted(declared)) or "none (it samples in one pass)"
        raise ConfigError(f"--sampler {sampler}: generator {name} has no such sampler; its samplers: {have}")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps {steps}: must be >= 1")
    return _WithSampler(generator, sampler, steps or declared[sampler])


def sample_run(args: argparse.Namespace) -> Path:
    """Fetch the run's generator, check every label map and sample it; returns ``samples.json``.

    Args:
        args: ``parse_args``'s result.
    """
    if args.n < 1:
        raise ConfigError(f"--n {args.n}: must be >= 1")
    files = label_files(args.labels)
    uri = store_uri(args.tracking_uri, args.study)
    run = find_run(uri, args.run)
    if run.status != "FINISHED":
        raise TrackingError(f"--run {args.run}: run {run.run_id} ({run.name}) is {run.status}, not FINISHED")
    if f"{ARTIFACT_DIR}/{WEIGHTS}" not in run_artifacts(uri, run.run_id, ARTIFACT_DIR):
        raise TrackingError(f"--run {args.run}: run {run.run_id} ({run.name}) has no generator weights "
                            f"({ARTIFACT_DIR}/{WEIGHTS}); only finished generator jobs log them")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="lge-sample-") as tmp:
        folder = download_artifact(uri, run.run_id, ARTIFACT_DIR, tmp)
        generator, settings = load_generator(folder, "cuda" if torch.cuda.is_available() else "cpu")
    name = settings["generator"]
    if args.n > 1 and generator.cfg.deterministic_sampling:
        raise ConfigError(f"--n {args.n}: generator {name} samples deterministically (every copy would be the same)")
    labels, affines = read_labels(files, settings["num_classes"], tuple(settings["shape"]))
    model = with_sampler(generator, name, args.sampler, args.steps)
    return sample_to_disk(model, labels, affines, args.out, args.seed, name=name,
                          num_classes=settings["num_classes"], copies=args.n)  # fmt: skip


def main(argv: list[str]) -> int:
    """``launchers/sample.py``: print where the volumes went; 0 on success."""
    manifest = sample_run(parse_args(argv))
    print(f"wrote {manifest.parent / 'samples'} ({manifest})")
    return 0
