#!/usr/bin/env python
"""Run the whole study: ``python launchers/sweep.py --splits 5`` (see ``benchmark/sweep.py``)."""

import sys
from pathlib import Path

# the repo root replaces this folder on the path: launchers/profile.py must not shadow the profile module
sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmark.run.cli import main_guard  # noqa: E402
from benchmark.run.sweep import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
