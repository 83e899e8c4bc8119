"""Atomic writes: concurrent writers of one file never fail or leave a torn file, and failures keep the old one."""

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest

from benchmark.atomic import atomic_path, is_temp, temp_path, write_text_atomic

WRITES = 200


def _writer(path: str, tag: str, start) -> None:
    start.wait()
    for i in range(WRITES):
        with atomic_path(Path(path)) as tmp:
            np.savez_compressed(tmp, who=np.array([ord(c) for c in tag]), i=np.array(i))


def test_two_processes_writing_one_file_both_succeed(tmp_path):
    """The race two jobs preparing one study ran into: a shared temp name was renamed away under the other writer."""
    target = tmp_path / "maps.npz"
    ctx = mp.get_context("fork")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(target), tag, start)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    with np.load(target) as z:  # a complete file from one of the writers, at its last write
        assert chr(int(z["who"][0])) in "ab" and int(z["i"]) == WRITES - 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.npz"]


def test_temp_name_keeps_the_format_suffix_and_is_unique(tmp_path):
    a, b = temp_path(tmp_path / "case_001.nii.gz"), temp_path(tmp_path / "case_001.nii.gz")
    assert a != b and a.parent == tmp_path
    assert a.name.startswith(".case_001.tmp-") and a.name.endswith(".nii.gz")
    assert temp_path(tmp_path / "maps.npz").suffix == ".npz"
    assert str(os.getpid()) in a.name
    assert is_temp(a) and not is_temp(tmp_path / "case_001.nii.gz") and not is_temp(tmp_path / ".hidden.csv")


def test_failed_write_keeps_the_previous_file_and_no_temp(tmp_path):
    target = write_text_atomic(tmp_path / "summary.json", '{"ok": 1}')
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == '{"ok": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
