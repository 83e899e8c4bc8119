"""A job kind: one record saying what a job of that kind reads, how it is named, where it writes and what it runs.

A kind is one file in this package (its body and its ``JobKind`` record) plus one line in ``KINDS``
(``benchmark/run/kinds/__init__.py``). "Kind" is the word for jobs; "stage" is the engine's training phase.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.study import Study
from benchmark.tracking.tracker import Tracker

Body = Callable[[Study, dict[str, Any], Path, Tracker], dict[str, Any]]


@dataclass(frozen=True)
class JobKind:
    """One kind of job.

    Args:
        name: the kind's name (``generator``, ``segmentation``, ``quality``); the MLflow tag ``kind``.
        sections: the config sections a job of this kind reads (its config hash covers these, plus the section of
            the generator it trains or uses).
        run_name: parameters -> the job key and MLflow run name, e.g. ``seg/split2/seed0/real+spade_ldm``.
        out_dir: (study, parameters) -> the folder the job writes (its ``done.json`` marks success).
        body: (study, parameters, output folder, tracker) -> a small JSON-safe summary.
        tags: (study) -> extra MLflow tags of this kind's runs.
        tracked: whether a job of this kind opens its own MLflow run (the study's bookkeeping kinds do not).
        trains: whether it trains networks on the study's ``device`` (a GPU is required where that is ``cuda``).
    """

    name: str
    sections: tuple[str, ...]
    run_name: Callable[[dict[str, Any]], str]
    out_dir: Callable[[Study, dict[str, Any]], Path]
    body: Body
    tags: Callable[[Study], dict[str, Any]] = lambda study: {}
    tracked: bool = True
    trains: bool = False
