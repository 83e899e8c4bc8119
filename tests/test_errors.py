"""The suite's errors cross process boundaries intact (a pool worker's error is pickled back to the driver)."""

from __future__ import annotations

import pickle

import pytest

from benchmark.errors import CheckpointError, ConfigError, DataError
from benchmark.segmentation.arms import LeakageError


@pytest.mark.parametrize("cls", [DataError, CheckpointError, LeakageError])
def test_data_errors_survive_pickling(cls):
    err = pickle.loads(pickle.dumps(cls("/data/case.nii.gz", "label value 9 is outside 0..6")))
    assert type(err) is cls and err.path == "/data/case.nii.gz" and err.problem == "label value 9 is outside 0..6"
    assert str(err) == "/data/case.nii.gz: label value 9 is outside 0..6"


def test_config_error_survives_pickling():
    err = pickle.loads(pickle.dumps(ConfigError("segmentation.arms: no pool")))
    assert type(err) is ConfigError and str(err) == "segmentation.arms: no pool"
