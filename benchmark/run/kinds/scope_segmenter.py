"""The real-only segmenter of a generator scope, frozen behind a generator's consistency loss.

A generator whose config asks for one (``GeneratorConfig.needs_segmenter``: SPADE-LDM with ``seg_weight > 0``)
trains against a U-Net that saw the same training cases as the generator and nothing else: the pool under
``disjoint_pool``, the split's training cases under ``per_split``, the shared set under ``shared``. One job per scope
and seed, before that scope's generator jobs of the seed: target cavity, trained by the segmentation arms' code and
budget rule. Before training, the audit: its cases are the generators' own and hold no test patient of a split the
scope serves (under ``shared`` they do, as the generators' do, and the job is flagged leaky). After training it is
evaluated on the served splits' test cases (and the generator hold-out) of patients it never saw, so that a loss
built on a segmenter that learnt nothing shows. Outputs: ``segmenter.pt`` and ``segmenter.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from benchmark.atomic import write_text_atomic
from benchmark.config import SegmentationConfig, StudyConfig, config_hash, to_dict
from benchmark.errors import DataError
from benchmark.run.kinds.base import JobKind
from benchmark.study import Study
from benchmark.tracking.tracker import Tracker

RECORD_FILE = "segmenter.json"


def needs_segmenter(cfg: StudyConfig, gen: str) -> bool:
    """Whether the study's generator ``gen`` (``spade_ldm``, ``spade_ldm@cavity_only``) trains against its scope's
    real-only segmenter (its config's ``needs_segmenter()``)."""
    return cfg.generators[gen.partition("@")[0]].needs_segmenter()


def segmenter_config(cfg: StudyConfig) -> SegmentationConfig:
    """The ``segmentation`` section as the scope's segmenter trains it: target cavity, the arms' network, optimiser
    and budget rule for a real-only arm (the arm list and ratios play no part, so adding an arm retrains nothing)."""
    return dataclasses.replace(  # fractions: a fraction's segmenter is told apart by its scope (split<k>@f<f>)
        cfg.segmentation, target="cavity", arms=("real",), ratios=(1.0,), fractions=(1.0,), budget="steps"
    )


def job_params(cfg: StudyConfig, scope: str, seed: int) -> dict[str, Any]:
    """A scope segmenter job's parameters: scope, seed and the hash of ``segmenter_config`` (its job hash, and that
    of every generator job depending on it, changes with the settings that make the segmenter)."""
    return {"scope": scope, "seed": seed, "segmenter_config": config_hash(segmenter_config(cfg))}


def run_name(p: dict[str, Any]) -> str:
    """``segmenter/<scope>/seed<seed>``."""
    return f"segmenter/{p['scope']}/seed{p['seed']}"


def make_command(scope: str, seed: int) -> str:
    """The command that trains the real-only segmenter of ``scope`` (any split of a pool or shared scope)."""
    from benchmark.segmentation.fractions import split_suffix

    base, fraction = split_suffix(scope)
    split = base.removeprefix("split") if base.startswith("split") else "0"
    if fraction != 1.0:
        return f"the sweep with {fraction:g} in segmentation.fractions (it trains segmenter/{scope}/seed{seed})"
    return f"python launchers/train_segmenter.py --generator-scope --split {split} --seed {seed}"


def scope_cases(study: Study, scope: str, seed: int = 0) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """The audit: the scope's training cases, the cases held out from them, and whether the scope is leaky.

    Args:
        study: the prepared study.
        scope: ``pool``, ``split<k>``, ``split<k>@f<f>`` (a training-data fraction under per_split) or ``all``.
        seed: the job's seed (it chooses a fraction's patients).

    Returns:
        ``(train, held_out, leaky)``: the generators' training cases; the test cases of the splits the scope serves
        and the generator hold-out, of patients outside ``train``; True when ``train`` holds a test patient of a
        served split (allowed under ``shared`` only; anything else raises ``LeakageError``).
    """
    from benchmark.segmentation.arms import LeakageError

    plan = study.plan
    train = study.scope_train_cases(scope, seed)
    patients = study.patient_of
    served = [plan.splits[k] for k in study.scope_splits(scope)]
    tested = {c for s in served for c in s.test_cases}
    test_patients = {p for s in served for p in s.test_patients} | {patients.get(c, c) for c in tested}
    seen = sorted(c for c in train if c in tested or patients.get(c, c) in test_patients)
    if seen and plan.protocol != "shared":
        raise LeakageError(
            study.splits_path,
            f"scope {scope}: test cases {seen[:5]} among its training cases (protocol {plan.protocol})",
        )
    trained = {patients.get(c, c) for c in train}
    held = sorted(c for c in tested | set(plan.generator_holdout_cases) if patients.get(c, c) not in trained)
    return tuple(train), tuple(held), bool(seen)


def run_scope_segmenter(study: Study, p: dict[str, Any], out: Path, tracker: Tracker) -> dict[str, Any]:
    """Audit, train and check the real-only segmenter of one scope and seed; write ``segmenter.json`` last."""
    from benchmark.segmentation.arms import build_arm
    from benchmark.segmentation.budget import budget_steps
    from benchmark.segmentation.train import fit_segmenter

    cfg, scope, seed = study.cfg, p["scope"], int(p["seed"])
    seg_cfg = segmenter_config(cfg)
    train, held, leaky = scope_cases(study, scope, seed)
    tracker.set_tags({"scope": scope, "target": seg_cfg.target, "leaky": str(leaky).lower()})
    arrays = study.arrays
    data = build_arm("real", train, held, {c: (arrays[c].image, arrays[c].label) for c in train}, {}, seed=seed)
    steps = budget_steps(seg_cfg, n_real=len(train), n_volumes=len(train))
    fitted = fit_segmenter(data, seg_cfg, cfg.train, out, seed, tracker, steps=steps)
    if fitted.rank != 0:  # the other ranks trained with rank 0; it alone evaluates and writes
        return {"scope": scope, "rank": fitted.rank}
    means = _held_out_means(study, fitted.model, held, scope, seed)
    tracker.log_metrics(
        {f"held_out_{k}": v for k, v in means.items() if not math.isnan(v)} | {"train_steps": fitted.steps}
    )
    record = {
        "scope": scope, "seed": seed, "protocol": study.plan.protocol, "leaky": leaky, "target": seg_cfg.target,
        "segmenter_config": p["segmenter_config"], "train_case_ids": list(train), "held_out_case_ids": list(held),
        "steps": fitted.steps, "final_losses": fitted.final_losses, "held_out_means": means,
        "weights": fitted.weights_file, "segmentation": to_dict(seg_cfg),
    }  # fmt: skip
    write_text_atomic(out / RECORD_FILE, json.dumps(record, indent=1, default=str))
    return {"scope": scope, "n_train": len(train), "n_held_out": len(held), "steps": fitted.steps, "leaky": leaky,
            "held_out_dice": means.get("mean_dice")}  # fmt: skip


def _held_out_means(study: Study, model: Any, held: tuple[str, ...], scope: str, seed: int) -> dict[str, float]:
    """Mean Dice and HD95 of the trained segmenter on the held-out cases (none: an empty dict)."""
    from benchmark.segmentation.evaluate import evaluate_cases, summarize

    if not held:
        return {}
    arrays = study.arrays
    test = {c: (arrays[c].image, arrays[c].label, study.spacing(c)) for c in held}
    predictions = {c: model.predict(arrays[c].image) for c in held}
    return summarize(evaluate_cases(predictions, test, study=study.cfg.name, split=scope, seed=seed))


def load_for_generator(study: Study, job: str, scope: str, seed: int, generator_cases: tuple[str, ...]) -> Any:
    """The frozen U-Net of ``scope`` and ``seed`` for a generator job, after checking it is the one this config makes
    and saw none but the generator's own training cases.

    Args:
        study: the study.
        job: the generator job's key (named in the errors).
        scope, seed: the generator job's scope and seed.
        generator_cases: the generator's training cases.

    Returns:
        The U-Net (``torch.nn.Module``, logits); a missing, stale or foreign segmenter raises ``DataError`` naming
        the segmenter job and the command that makes it.
    """
    from benchmark.segmentation.arms import LeakageError
    from benchmark.segmentation.model import load_segmenter

    folder = study.scope_segmenter_dir(scope, seed)
    key, make = run_name({"scope": scope, "seed": seed}), make_command(scope, seed)
    try:
        record = json.loads((folder / RECORD_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        raise DataError(
            folder / RECORD_FILE,
            f"{job} trains against its scope's frozen real-only segmenter (job {key}), which is not there; make it "
            f"with: {make} (and the study's --config and overrides)",
        ) from None
    if record.get("segmenter_config") != config_hash(segmenter_config(study.cfg)):
        raise DataError(
            folder / RECORD_FILE, f"{job}: segmenter job {key} was trained with other segmentation settings; {make}"
        )
    foreign = sorted(set(record.get("train_case_ids", ())) - set(generator_cases))
    if foreign:
        raise LeakageError(folder / RECORD_FILE, f"{job}: its segmenter saw cases the generator did not: {foreign[:5]}")
    return load_segmenter(folder, segmenter_config(study.cfg)).networks["unet"]


KIND = JobKind(
    name="scope_segmenter",
    sections=("data", "preprocess", "splits", "train"),  # and segmenter_config's hash, in its parameters
    run_name=run_name,
    out_dir=lambda study, p: study.scope_segmenter_dir(p["scope"], p["seed"]),
    body=run_scope_segmenter,
    trains=True,
)
