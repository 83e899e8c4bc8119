"""The internal dataset layout: a manifest of cases, each an image + label NIfTI with its checksums.

Every adapter turns its public layout into this; every later stage reads only this. Label values in the
internal layout are 0 (background), 1 (LA cavity), 2 (LA wall).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmark.atomic import write_text_atomic
from benchmark.errors import DataError

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True, kw_only=True)
class Case:
    """One scan.

    Args:
        case_id: unique scan id.
        patient_id: the patient; several scans (pre/post ablation) may share one. Splits are by patient.
        image: path of the image NIfTI, relative to the manifest's folder.
        label: path of the label NIfTI (0/1/2), relative to the manifest's folder.
        shape: voxel grid (X, Y, Z).
        spacing: voxel size in mm.
        sha256_image: checksum of the image file.
        sha256_label: checksum of the label file.
        source: the original file(s) this case was read from, for error messages and provenance.
    """

    case_id: str
    patient_id: str
    image: str
    label: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    sha256_image: str
    sha256_label: str
    source: str = ""


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A dataset in the internal layout.

    Args:
        root: the folder holding ``manifest.json``.
        dataset: the layout it came from (``la2018``, ``phantom``, ``<layout>/prep`` once preprocessed).
        cases: the scans.
        patient_source: how the patient ids came about: ``phantom`` (known), ``patients.csv``, ``per_scan``
            (no patients named: each scan its own patient) or ``inferred`` (``benchmark.data.patients``).
        notes: caveats about the data that a report must state, one line each (e.g. patients unknown).
    """

    root: Path
    dataset: str
    cases: tuple[Case, ...]
    patient_source: str = ""
    notes: tuple[str, ...] = ()

    def by_id(self) -> dict[str, Case]:
        return {c.case_id: c for c in self.cases}

    def patients(self) -> dict[str, list[str]]:
        """patient id -> its case ids (sorted)."""
        out: dict[str, list[str]] = {}
        for c in self.cases:
            out.setdefault(c.patient_id, []).append(c.case_id)
        return {p: sorted(ids) for p, ids in sorted(out.items())}

    def path(self, case: Case, which: str) -> Path:
        """Absolute path of a case's ``image`` or ``label``; refuses paths escaping the dataset root."""
        rel = getattr(case, which)
        full = (self.root / rel).resolve()
        if not full.is_relative_to(self.root.resolve()):
            raise DataError(self.root / MANIFEST_NAME, f"case {case.case_id}: path {rel!r} escapes the dataset root")
        return full

    def digest(self) -> str:
        """A hash of all case checksums: names the exact data behind a number."""
        h = hashlib.sha256()
        for c in sorted(self.cases, key=lambda c: c.case_id):
            h.update(f"{c.case_id}:{c.patient_id}:{c.sha256_image}:{c.sha256_label}".encode())
        return h.hexdigest()[:16]

    def save(self) -> Path:
        """Write ``manifest.json`` atomically."""
        payload = {"dataset": self.dataset, "digest": self.digest(), "cases": [asdict(c) for c in self.cases]}
        if self.patient_source or self.notes:  # absent otherwise, so earlier manifests stay byte-identical
            payload.update(patient_source=self.patient_source, notes=list(self.notes))
        return write_text_atomic(self.root / MANIFEST_NAME, json.dumps(payload, indent=1))

    @classmethod
    def load(cls, root: str | Path) -> Manifest:
        """Read ``<root>/manifest.json``; every case path is checked to stay inside ``root``."""
        root = Path(root)
        file = root / MANIFEST_NAME
        if not file.is_file():
            raise DataError(file, "manifest not found")
        try:
            payload = json.loads(file.read_text())
            cases = tuple(
                Case(**{**c, "shape": tuple(c["shape"]), "spacing": tuple(c["spacing"])}) for c in payload["cases"]
            )
            source, notes = str(payload.get("patient_source", "")), tuple(str(n) for n in payload.get("notes", ()))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(file, f"not a valid manifest ({exc})") from None
        man = cls(root=root, dataset=payload.get("dataset", "unknown"), cases=cases, patient_source=source, notes=notes)
        for c in cases:
            man.path(c, "image")
            man.path(c, "label")
        return man


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
