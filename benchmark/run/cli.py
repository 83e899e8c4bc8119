"""Shared launcher plumbing: turn the suite's errors into one line on stderr and a non-zero exit."""

from __future__ import annotations

import sys
from collections.abc import Callable

from benchmark.errors import BenchmarkError


def main_guard(fn: Callable[[], int | None]) -> int:
    """Run a launcher body; a ``BenchmarkError`` becomes ``error: <message>`` and exit code 2.

    Args:
        fn: the launcher's body; its return value (or 0) is the exit code.
    """
    try:
        return int(fn() or 0)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def sweep_main() -> int:
    """Console entry point ``lge-sweep`` (same as ``python launchers/sweep.py``)."""
    from benchmark.run.sweep import main

    return main_guard(lambda: main(sys.argv[1:]))
