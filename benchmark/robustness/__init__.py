"""Robustness study pieces: MRI corruptions at graded severities (``corruptions``) and the shifted test sets a
robustness job evaluates (``shifts``: corruptions, the phantom's second scanner profile ``PhantomConfig.site``
from ``benchmark/data/phantom_sites.py``, an external test set).
"""

from benchmark.robustness.corruptions import CORRUPTIONS, SEVERITIES, case_seed, corrupt, grid

__all__ = ["CORRUPTIONS", "SEVERITIES", "case_seed", "corrupt", "grid"]
