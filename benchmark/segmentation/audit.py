"""The leakage audit of an arm (``benchmark.segmentation.arms``): before anything is trained, every training volume
of the arm is checked against its split and the arm's own training cases (a training-data fraction's subset of the
split's), the oracle's extra real scans against the split's patients, and the generator's training ids against the
split's test patients and, under ``per_split``, the arm's training cases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from benchmark.errors import DataError
from benchmark.segmentation import controls


class LeakageError(DataError):
    """An arm's training data touches the split's test patients."""


@dataclass(frozen=True)
class AuditReport:
    """The outcome of ``audit_arm``: ``leaky`` is True only for the allowed ``shared`` protocol."""

    arm: str
    protocol: str | None
    leaky: bool
    message: str


def audit_arm(arm_data: Any, split: Any, patients: Mapping[str, str] | None = None) -> AuditReport:
    """Check an arm against its split; raise ``LeakageError`` on any leak of a test patient into training.

    Args:
        arm_data: the ``ArmData`` from ``benchmark.segmentation.arms.build_arm``.
        split: a ``benchmark.data.splits.Split`` (or anything with ``train_cases``, ``test_cases`` and
            optionally ``train_patients`` / ``test_patients`` / ``index``).
        patients: case id -> patient id of the study; needed to prove that the oracle's extra real scans come
            from patients outside the split.

    Returns:
        An ``AuditReport``. Fails when a training item comes from (or is labelled by) a test case or a case
        outside the arm's training cases (a subset of the split's: a training-data fraction's), except the oracle's
        extra real scans, which must come from patients neither in the split's training nor in its test set, and
        only in ``real+real_extra``; when the arm's test list differs from the split's; when the generator's
        training ids include a test patient (allowed only under the ``shared`` protocol, which is flagged leaky);
        or, under ``per_split``, when the generator saw a case outside the arm's training cases (a generator of a
        fraction trains on the fraction's patients only).
    """
    where = f"arm {arm_data.arm} of split {getattr(split, 'index', '?')}"
    test = set(split.test_cases)
    test_any = test | set(getattr(split, "test_patients", ()))
    folder = arm_data.provenance.get("samples_folder") or f"<{arm_data.arm}>"
    if set(arm_data.test_ids) != test:
        raise LeakageError(folder, f"{where}: its test cases are not the split's test cases")
    overlap = sorted(set(arm_data.train_ids) & test_any)
    if overlap:
        raise LeakageError(folder, f"{where}: test cases in its training list: {overlap[:5]}")
    outside = sorted(set(arm_data.train_ids) - set(split.train_cases))
    if outside:
        raise LeakageError(folder, f"{where}: cases outside the split's training set in its list: {outside[:5]}")
    for item in arm_data.items:
        _audit_item(item, arm_data, split, test_any, patients, where, item.path or folder)
    protocol = arm_data.provenance.get("protocol")
    gen_ids = set(arm_data.provenance.get("generator_train_ids") or ())
    seen = sorted(gen_ids & test_any)
    if seen and protocol != "shared":
        raise LeakageError(
            folder,
            f"{where}: generator {arm_data.generator} was trained on test patients/cases {seen[:5]} "
            f"(protocol {protocol!r}); only the 'shared' protocol may, and it is reported as leaky",
        )
    beyond = sorted(gen_ids - set(arm_data.train_ids))
    if protocol == "per_split" and beyond:
        raise LeakageError(
            folder,
            f"{where}: generator {arm_data.generator} (per_split) was trained on cases outside the arm's training "
            f"cases (fraction {arm_data.fraction:g}): {beyond[:5]}",
        )
    leaky = protocol == "shared"
    msg = f"{where}: leaky (shared protocol; generator saw {len(seen)} test cases)" if leaky else f"{where}: clean"
    return AuditReport(arm_data.arm, protocol, leaky, msg)


def _audit_item(
    item: Any, arm: Any, split: Any, test_any: set, patients: Mapping[str, str] | None, where: str, at: Any
) -> None:
    """One training item against its split and the arm's training cases (see ``audit_arm``)."""
    kind, train = arm.kind, set(arm.train_ids)
    for role, case in (("derived from", item.source_case_id), ("labelled by", item.target_case_id)):
        if case in test_any:
            raise LeakageError(at, f"{where}: {item.origin} training volume {role} test case {case}")
        if case not in train and item.origin != "real_extra":
            what = "the split" if arm.fraction == 1.0 else f"the arm's fraction {arm.fraction:g} of the split"
            raise LeakageError(
                at, f"{where}: {item.origin} training volume {role} {case}, which is not a training case of {what}"
            )
    if item.origin != "real_extra":
        return
    case = item.source_case_id
    if kind != controls.ORACLE:
        raise LeakageError(at, f"{where}: real scan {case} from outside the split; only {controls.ORACLE} adds them")
    patient = (patients or {}).get(case)
    if patient is None:
        raise LeakageError(
            at, f"{where}: extra real scan {case} has no known patient: it cannot be shown to be outside"
        )
    for part in ("train", "test"):
        if case in getattr(split, f"{part}_cases") or patient in getattr(split, f"{part}_patients", ()):
            raise LeakageError(at, f"{where}: extra real scan {case} of patient {patient} is in the split's {part} set")
