#!/usr/bin/env python
"""Run the whole study: ``python launchers/sweep.py --splits 5`` (see ``benchmark/run/sweep.py``)."""

import sys

from benchmark.run.cli import main_guard
from benchmark.run.sweep import main

if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
