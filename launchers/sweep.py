#!/usr/bin/env python
"""Run the whole study: ``python launchers/sweep.py --splits 5`` (see ``benchmark/sweep.py``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.cli import main_guard  # noqa: E402
from benchmark.sweep import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
