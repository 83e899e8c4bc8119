"""The job-kind registry: one line per kind (see ``base.JobKind``); a kind is one file in this package."""

from __future__ import annotations

from benchmark.errors import ConfigError
from benchmark.run.kinds import generator, prepare, quality, report, robustness, scope_segmenter, segmentation
from benchmark.run.kinds.base import JobKind

KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    """Add a kind to ``KINDS``; a name already taken is an error (two kinds never share a name)."""
    if kind.name in KINDS:
        raise ConfigError(f"job kind {kind.name!r} is registered twice")
    KINDS[kind.name] = kind
    return kind


register(prepare.KIND)
register(scope_segmenter.KIND)
register(generator.KIND)
register(segmentation.KIND)
register(quality.KIND)
register(robustness.KIND)
register(report.KIND)


def get_kind(name: str) -> JobKind:
    """Look up a job kind by name; an unknown name lists the choices."""
    if name not in KINDS:
        raise ConfigError(f"job kind {name!r} is unknown; choices: {', '.join(KINDS)}")
    return KINDS[name]
