"""Job-graph dispatch on the in-process and local executors."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cloudpickle
import pytest

from benchmark.config import ClusterConfig
from benchmark.errors import ConfigError
from benchmark.run.dispatch import JobNode, dispatch

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # local jobs unpickle this module's functions


def _write(path, text, sleep=0.0):
    time.sleep(sleep)
    with open(path, "a") as fh:
        fh.write(text + "\n")
    return text


def _meet(folder, name, peers, sleep=0.0, timeout=120.0):
    """Mark this job as started, then wait for every peer to have started: only concurrent jobs all return.

    Jobs run one after another would time out in the first one, however slowly the executor starts processes.
    """
    folder = Path(folder)
    (folder / f"{name}.started").touch()
    deadline = time.monotonic() + timeout
    while not all((folder / f"{peer}.started").exists() for peer in peers):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: {peers} never started while it was running")
        time.sleep(0.05)
    time.sleep(sleep)
    return name


def _boom(msg):
    raise ValueError(msg)


def _graph(tmp_path):
    log = tmp_path / "order.txt"
    return log, [
        JobNode("a", "generator", _write, (str(log), "a")),
        JobNode("b", "segmentation", _write, (str(log), "b")),
        JobNode("c", "quality", _write, (str(log), "c"), deps=("a", "b")),
        JobNode("bad", "generator", _boom, ("exploded on purpose",)),
        JobNode("after_bad", "quality", _write, (str(log), "x"), deps=("bad",)),
    ]


def test_debug_runs_in_dependency_order_and_isolates_failures(tmp_path):
    log, nodes = _graph(tmp_path)
    out = dispatch(nodes, ClusterConfig(executor="debug"), tmp_path / "sub")
    assert {k: o.status for k, o in out.items()} == {
        "a": "done",
        "b": "done",
        "c": "done",
        "bad": "failed",
        "after_bad": "skipped",
    }
    lines = log.read_text().split()
    assert lines.index("c") > max(lines.index("a"), lines.index("b"))
    assert "exploded on purpose" in out["bad"].error
    assert "bad" in out["after_bad"].error


def test_local_executor_runs_independent_jobs_in_parallel(tmp_path):
    names = ["j0", "j1"]
    nodes = [JobNode(n, "segmentation", _meet, (str(tmp_path), n, names, 0.0, 60.0)) for n in names]
    out = dispatch(nodes, ClusterConfig(executor="local", max_local_jobs=2), tmp_path / "sub")
    # each job waited for the other to start: both finish only if they ran at the same time (separate processes)
    assert {k: o.status for k, o in out.items()} == {"j0": "done", "j1": "done"}, {k: o.error for k, o in out.items()}


def test_pool_executor_runs_in_parallel_and_isolates_failures(tmp_path):
    names = ["j0", "j1"]
    nodes = [JobNode(n, "segmentation", _meet, (str(tmp_path), n, names, 1.5, 60.0)) for n in names]
    nodes += [
        JobNode("bad", "quality", _boom, ("pool failure",)),
        JobNode("x", "quality", _meet, (str(tmp_path), "x", []), deps=("bad",)),
    ]
    out = dispatch(nodes, ClusterConfig(executor="pool", max_local_jobs=2), tmp_path / "sub")
    assert {k: o.status for k, o in out.items()} == {"j0": "done", "j1": "done", "bad": "failed", "x": "skipped"}
    assert "ValueError: pool failure" in out["bad"].error
    assert not (tmp_path / "x.started").exists()  # a job after a failed one never ran
    assert out["j0"].seconds >= 1.5


def test_unknown_dependency_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown jobs"):
        dispatch([JobNode("a", "x", _write, ("f", "a"), deps=("nope",))], ClusterConfig(), tmp_path)
