"""Robustness study pieces: MRI corruptions at graded severities (``corruptions``).

The shifted test sets are built from these and from the phantom's second scanner profile
(``PhantomConfig.site``, ``benchmark/data/phantom_sites.py``).
"""

from benchmark.robustness.corruptions import CORRUPTIONS, SEVERITIES, case_seed, corrupt, grid

__all__ = ["CORRUPTIONS", "SEVERITIES", "case_seed", "corrupt", "grid"]
