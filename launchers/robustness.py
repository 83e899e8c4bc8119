#!/usr/bin/env python
"""Robustness jobs on a finished study: ``python launchers/robustness.py --study runs/default``
(see ``benchmark/run/robustness.py``)."""

import sys

from benchmark.run.cli import main_guard
from benchmark.run.robustness import main

if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
