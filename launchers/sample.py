#!/usr/bin/env python
"""Sample label maps with the generator of a finished generator run, from a tracking server or a study folder.

Example: ``python launchers/sample.py --run gen/pool/spade_ldm/seed0 --labels my_maps/ --out synth/ --study
outputs/default --sampler ddim --steps 50`` (``--tracking-uri http://host:5000`` instead of ``--study``).
"""

import sys

from benchmark.run.cli import main_guard
from benchmark.run.sample import main

if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
