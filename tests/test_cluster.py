"""Job-graph dispatch on the in-process and local executors."""

from __future__ import annotations

import sys
import time

import cloudpickle
import pytest

from benchmark.cluster import JobNode, dispatch
from benchmark.config import ClusterConfig
from benchmark.errors import ConfigError

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # local jobs unpickle this module's functions


def _write(path, text, sleep=0.0):
    time.sleep(sleep)
    with open(path, "a") as fh:
        fh.write(text + "\n")
    return text


def _span(path, name, sleep):
    start = time.time()
    time.sleep(sleep)
    with open(path, "a") as fh:
        fh.write(f"{name} {start} {time.time()}\n")


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
    log = tmp_path / "par.txt"
    nodes = [JobNode(f"j{i}", "segmentation", _span, (str(log), f"j{i}", 2.0)) for i in range(2)]
    out = dispatch(nodes, ClusterConfig(executor="local", max_local_jobs=2), tmp_path / "sub")
    assert all(o.status == "done" for o in out.values())
    spans = {name: (float(a), float(b)) for name, a, b in (line.split() for line in log.read_text().splitlines())}
    assert sorted(spans) == ["j0", "j1"]
    # the two jobs were running at the same time (separate processes)
    assert max(s for s, _ in spans.values()) < min(e for _, e in spans.values())


def test_pool_executor_runs_in_parallel_and_isolates_failures(tmp_path):
    log = tmp_path / "pool.txt"
    nodes = [JobNode(f"j{i}", "segmentation", _span, (str(log), f"j{i}", 1.5)) for i in range(2)]
    nodes += [
        JobNode("bad", "quality", _boom, ("pool failure",)),
        JobNode("x", "quality", _span, (str(log), "x", 0), deps=("bad",)),
    ]
    out = dispatch(nodes, ClusterConfig(executor="pool", max_local_jobs=2), tmp_path / "sub")
    assert {k: o.status for k, o in out.items()} == {"j0": "done", "j1": "done", "bad": "failed", "x": "skipped"}
    assert "ValueError: pool failure" in out["bad"].error
    spans = {name: (float(a), float(b)) for name, a, b in (line.split() for line in log.read_text().splitlines())}
    assert max(s for s, _ in spans.values()) < min(e for _, e in spans.values())
    assert out["j0"].seconds >= 1.5


def test_unknown_dependency_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown jobs"):
        dispatch([JobNode("a", "x", _write, ("f", "a"), deps=("nope",))], ClusterConfig(), tmp_path)
