"""Study state, driver lock and folder claims; the Slurm-free parts of submission planning and status."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

import pytest

from benchmark.errors import ConfigError
from benchmark.run import slurm
from benchmark.run.job import JobSpec
from benchmark.run.state import JobRecord, StudyState, claim_folder, driver_lock
from benchmark.run.status import JobStatus, _from_slurm, format_status, study_status
from benchmark.run.submit import PlannedJob, _waves, plan_jobs


def test_records_survive_two_writers_and_a_reload(tmp_path):
    a, b = StudyState(tmp_path), StudyState(tmp_path)
    a.update([JobRecord("k1", "generator", "h1", job_id="5")])
    b.update([JobRecord("k2", "segmentation", "h2", job_id="6_0", deps=["k1"])])
    loaded = StudyState(tmp_path).load()
    assert sorted(loaded) == ["k1", "k2"] and loaded["k2"].deps == ["k1"] and loaded["k1"].job_id == "5"
    a.set_status("k1", "failed", "boom")
    assert StudyState(tmp_path).load()["k1"].status == "failed"


def test_a_damaged_state_file_is_named(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "jobs.json").write_text("{not json")
    with pytest.raises(Exception, match=r"state/jobs.json: is not a study state file"):
        StudyState(tmp_path).load()


def _hold_driver(root: str, ready: mp.Event, release: mp.Event) -> None:
    with driver_lock(root):
        ready.set()
        release.wait(30)


def test_second_driver_is_refused_with_the_first_named(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_driver, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        refused = rf"another driver is running this study \(pid {holder.pid} on "
        with pytest.raises(ConfigError, match=refused), driver_lock(tmp_path):
            pass
    finally:
        release.set()
        holder.join(30)
    with driver_lock(tmp_path):  # the lock went with its holder
        pass


def _claim_and_finish(folder: str, ready: mp.Event, hold_s: float) -> None:
    with claim_folder(folder, "first attempt"):
        ready.set()
        time.sleep(hold_s)
        (Path(folder) / "done.json").write_text(json.dumps({"cfg_hash": "h"}))


def test_a_claimed_folder_makes_the_second_copy_wait(tmp_path):
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    first = ctx.Process(target=_claim_and_finish, args=(str(tmp_path), ready, 1.5))
    first.start()
    assert ready.wait(60)
    with claim_folder(tmp_path, "second attempt"):
        # the second copy only gets the folder once the first has finished with it
        assert json.loads((tmp_path / "done.json").read_text()) == {"cfg_hash": "h"}
    first.join(30)


def test_collapsed_array_ids_expand():
    assert slurm.expand_ids("6_[0-2,5]") == ["6_0", "6_1", "6_2", "6_5"]
    assert slurm.expand_ids("7_[1-3%2]") == ["7_1", "7_2", "7_3"]
    assert slurm.expand_ids("8_4") == ["8_4"] and slurm.expand_ids("9") == ["9"]


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        ("PENDING", "Dependency", "queued"),
        ("RUNNING", "None", "running"),
        ("REQUEUED", "", "queued"),
        ("CANCELLED", "Dependency", "skipped"),
        ("CANCELLED", "None", "cancelled"),
        ("TIMEOUT", "", "failed"),
        ("COMPLETED", "", "failed"),  # finished without its done.json: not a success
    ],
)
def test_slurm_states_map_to_study_states(state, reason, expected):
    assert _from_slurm(slurm.SlurmState(state, reason))[0] == expected


def _spec(key: str, kind: str = "segmentation", cfg_hash: str = "h") -> JobSpec:
    return JobSpec(kind, key, {}, {}, None, None, None, cfg_hash)


def _standing(key: str, status: str, job_id: str, cfg_hash: str = "h", attempt: int = 1) -> JobStatus:
    return JobStatus(JobRecord(key, "segmentation", cfg_hash, attempt, "slurm", job_id), status)


def test_plan_keeps_done_and_active_jobs_and_resubmits_failed_ones(tmp_path):
    jobs = [
        PlannedJob(_spec(k), deps, tmp_path / k) for k, deps in [("a", ()), ("b", ("a",)), ("c", ("a",)), ("d", ())]
    ]
    standing = {"b": _standing("b", "running", "12"), "c": _standing("c", "failed", "13", attempt=2)}
    records = {k: s.record for k, s in standing.items()}
    plan_jobs(jobs, records, standing, lambda j: j.spec.key == "a")
    assert [(j.action, j.attempt, j.job_id) for j in jobs] == [
        ("done", 1, None),
        ("active", 1, "12"),  # left alone, its id reused by the jobs that wait for it
        ("submit", 3, None),  # the next attempt of a failed job
        ("submit", 1, None),
    ]


def test_plan_refuses_while_another_config_runs_under_the_same_key(tmp_path):
    jobs = [PlannedJob(_spec("a", cfg_hash="new"), (), tmp_path)]
    standing = {"a": _standing("a", "queued", "7", cfg_hash="old")}
    with pytest.raises(ConfigError, match=r"another config .* a \(Slurm job 7\); cancel them with --cancel"):
        plan_jobs(jobs, {"a": standing["a"].record}, standing, lambda j: False)


def test_waves_follow_dependencies_of_submitted_jobs_only(tmp_path):
    jobs = [
        PlannedJob(_spec("prep", "prepare"), (), tmp_path, action="done"),
        PlannedJob(_spec("gen", "generator"), ("prep",), tmp_path, action="active", job_id="3"),
        PlannedJob(_spec("s1"), ("gen",), tmp_path),
        PlannedJob(_spec("s2"), ("prep",), tmp_path),
        PlannedJob(_spec("q", "quality"), ("s1",), tmp_path),
    ]
    assert [[j.spec.key for j in w] for w in _waves(jobs)] == [["s1", "s2"], ["q"]]


def test_status_of_an_in_driver_study_whose_driver_is_gone(tmp_path):
    out = tmp_path / "job"
    out.mkdir()
    (out / "done.json").write_text(json.dumps({"cfg_hash": "h"}))
    StudyState(tmp_path).update(
        [
            JobRecord("ok", "generator", "h", executor="pool", out=str(out)),
            JobRecord("bad", "segmentation", "h", executor="pool", status="failed", error="ValueError: x"),
            JobRecord("cut", "quality", "h", executor="pool", status="queued"),
        ]
    )
    statuses = {s.key: s.status for s in study_status(tmp_path)}
    assert statuses == {"ok": "done", "bad": "failed", "cut": "interrupted"}
    text = format_status("s", study_status(tmp_path))
    assert "generator    done 1" in text and "FAILED bad" in text and "ValueError: x" in text
