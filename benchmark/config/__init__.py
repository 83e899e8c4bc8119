"""Typed study configuration: the sections (``sections``) and the loader behind them (``loader``).

Callers import from here: ``from benchmark.config import StudyConfig, load_config, to_dict``.
"""

from benchmark.config.sections import *  # noqa: F403
from benchmark.config.sections import __all__  # noqa: F401
