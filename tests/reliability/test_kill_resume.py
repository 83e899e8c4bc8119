"""Jobs killed mid-training resume from their last checkpoint and end with bit-identical results.

A tiny study (one split, 24 training steps, a checkpoint every 4 steps) is run twice from the same seed:

- the reference: the generator and segmentation jobs uninterrupted (in the test's process, as the launchers run
  them);
- the faulty one, in another study folder: ``launchers/train_generator.py`` is SIGKILLed at a random (seeded)
  step after its first checkpoint; ``launchers/train_segmenter.py`` is SIGKILLed half-way through writing a random
  checkpoint (its ``state.pt`` cut in half, as a kill during ``torch.save`` leaves it). Then
  ``launchers/sweep.py`` is re-run on that study: it resumes both jobs from their last complete checkpoint.

The per-case metrics (``per_case.csv``) of the segmenter, the generator's final losses and every synthetic
volume must equal the reference bit for bit; the interrupted write must not have touched the checkpoint before it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from study_fixtures import tiny_study_overrides

from benchmark.engine.checkpoint import find_latest, read_state
from benchmark.errors import CheckpointError

REPO = Path(__file__).resolve().parents[2]
STEPS, EVERY = 24, 4
SEED = 9  # picks the kill points
GEN_DIR = Path("generators/pool/pix2pix3d/seed0")
SEG_DIR = Path("segmentation/split0/seed0/real")

# Runs a launcher with torch.save wrapped: the KILL_AT-th checkpoint state.pt is written half and the process
# SIGKILLs itself, exactly what a kill during the write leaves on disk.
KILL_DURING_WRITE = """
import io, os, runpy, signal, sys
import torch
real_save, count, kill_at = torch.save, [0], int(os.environ["KILL_AT"])
def save(obj, f, *args, **kwargs):
    if str(f).endswith("state.pt") and ".tmp" in str(f):
        count[0] += 1
        if count[0] == kill_at:
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            with open(f, "wb") as fh:
                fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                fh.flush()
                os.fsync(fh.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = save
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _overrides(root: Path, cache: Path) -> list[str]:
    return [*tiny_study_overrides(root, "kr", n_splits=1), f"data.cache_dir={cache}", "tracking.enabled=false",
            f"train.checkpoint_every={EVERY}", f"generators.pix2pix3d.steps={STEPS}", f"segmentation.steps={STEPS}",
            "segmentation.arms=[real]", "train.keep_checkpoints=0"]  # fmt: skip


def _launch(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})  # fmt: skip


def _jobs(root: Path, cache: Path) -> dict[str, list[str]]:
    ov = _overrides(root, cache)
    return {
        "gen": ["launchers/train_generator.py", "--generator", "pix2pix3d", *ov],
        "seg": ["launchers/train_segmenter.py", "--arm", "real", *ov],
    }


def _wait(procs: dict[str, subprocess.Popen], logs: dict[str, Path], timeout: float = 300) -> dict[str, int]:
    codes = {k: p.wait(timeout=timeout) for k, p in procs.items()}
    for k, code in codes.items():
        assert code in (0, -signal.SIGKILL), f"{k} exited {code}:\n{logs[k].read_text()[-3000:]}"
    return codes


def _step(path: Path | None) -> int:
    return int(path.name.split("-")[1]) if path is not None else 0


def _reference(root: Path, cache: Path) -> None:
    """The uninterrupted jobs, in this process (the launchers' body without their argument parsing)."""
    from benchmark.run.single import DEFAULT_CONFIG, run_one

    ov = _overrides(root, cache)
    args = argparse.Namespace(config=str(DEFAULT_CONFIG), seed=0, split=0, tracking_uri=None, overrides=ov)
    run_one(args, "generator", {"generator": "pix2pix3d", "seed": 0})
    run_one(args, "segmentation", {"split": 0, "seed": 0, "arm": "real", "ratio": 1.0})


def _kill_at_checkpoint(proc: subprocess.Popen, ckpts: Path, target: int, box: dict) -> None:
    while _step(find_latest(ckpts)) < target and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    box["killed_after"] = _step(find_latest(ckpts))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Reference and faulty studies; returns their folders, what the faults hit and the resuming sweep."""
    from benchmark.config import load_config
    from benchmark.data.pipeline import prepare_dataset

    tmp = tmp_path_factory.mktemp("kill_resume")
    cache, ref, bad = tmp / "cache", tmp / "ref", tmp / "bad"
    prepare_dataset(load_config(None, _overrides(ref, cache)))  # the shared dataset cache, built once
    rng = random.Random(SEED)
    gen_target = rng.choice(range(2 * EVERY, STEPS - EVERY, EVERY))  # a checkpoint after the first one
    seg_kill_at = rng.randrange(2, STEPS // EVERY)  # the n-th checkpoint write is interrupted

    # the faulty runs in subprocesses (a thread kills the generator) while the reference runs here
    driver = tmp / "kill_during_write.py"
    driver.write_text(KILL_DURING_WRITE)
    jobs = _jobs(bad, cache)
    logs = {"gen": tmp / "bad_gen.log", "seg": tmp / "bad_seg.log"}
    procs = {"gen": _launch(jobs["gen"], logs["gen"]),
             "seg": _launch([str(driver), *jobs["seg"]], logs["seg"], {"KILL_AT": str(seg_kill_at)})}  # fmt: skip
    box: dict = {}
    killer = threading.Thread(target=_kill_at_checkpoint, args=(procs["gen"], bad / "kr" / GEN_DIR / "checkpoints",
                                                                 gen_target, box))  # fmt: skip
    killer.start()
    t0 = time.monotonic()
    try:
        _reference(ref, cache)
    finally:
        killer.join(timeout=300)
        codes = _wait(procs, logs)
    t_ref = time.monotonic() - t0
    t_fault = time.time()
    faults = {"codes": codes, "gen_target": gen_target, "gen_killed_after": box.get("killed_after", -1),
              "seg_kill_at": seg_kill_at, "reference_seconds": t_ref, "fault_time": t_fault}  # fmt: skip
    seg_ckpts = bad / "kr" / SEG_DIR / "checkpoints"
    faults["seg_ckpts"] = sorted(p.name for p in seg_ckpts.iterdir())
    faults["seg_last_good"] = _step(find_latest(seg_ckpts))
    faults["seg_last_good_state"] = read_state(find_latest(seg_ckpts))["global_step"]
    faults["partial_error"] = _read_error(seg_ckpts / f"ckpt-{seg_kill_at * EVERY:09d}.tmp")

    # re-running the sweep on the faulty study resumes both jobs
    t0 = time.monotonic()
    sweep = subprocess.run([sys.executable, "launchers/sweep.py", "--generators", "pix2pix3d", *_overrides(bad, cache)],
                           cwd=REPO, capture_output=True, text=True, timeout=400)  # fmt: skip
    faults["resume_seconds"] = time.monotonic() - t0
    return ref / "kr", bad / "kr", faults, sweep


def _read_error(folder: Path) -> str:
    try:
        read_state(folder)
    except CheckpointError as exc:
        return str(exc)
    return ""


@pytest.mark.slow
def test_faults_hit_mid_training(runs):
    _, bad, f, _ = runs
    assert f["codes"] == {"gen": -signal.SIGKILL, "seg": -signal.SIGKILL}
    assert f["gen_target"] <= f["gen_killed_after"] < STEPS
    # the kill during the write left the half-written folder next to the intact previous checkpoint
    assert f"ckpt-{f['seg_kill_at'] * EVERY:09d}.tmp" in f["seg_ckpts"]
    assert f["seg_last_good"] == f["seg_last_good_state"] == (f["seg_kill_at"] - 1) * EVERY
    assert "state.pt: cannot be read as a checkpoint" in f["partial_error"]


@pytest.mark.slow
def test_sweep_resumes_both_jobs_bit_identical(runs):
    ref, bad, f, sweep = runs
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    # resumed, not restarted: the checkpoints up to the resume point were not written again after the faults
    for job, resumed_at in ((GEN_DIR, f["gen_killed_after"]), (SEG_DIR, f["seg_last_good"])):
        ckpts = {_step(p): p.stat().st_mtime for p in (bad / job / "checkpoints").iterdir()}
        assert sorted(ckpts) == list(range(EVERY, STEPS + 1, EVERY)), job  # no .tmp leftover either
        assert all((t < f["fault_time"]) == (s <= resumed_at) for s, t in ckpts.items()), (job, resumed_at)
    assert (bad / SEG_DIR / "per_case.csv").read_bytes() == (ref / SEG_DIR / "per_case.csv").read_bytes()
    ref_done, bad_done = (json.loads((d / GEN_DIR / "done.json").read_text()) for d in (ref, bad))
    assert bad_done["final_losses"] == ref_done["final_losses"]
    samples = sorted((ref / GEN_DIR / "samples_all" / "samples").glob("*.nii.gz"))
    assert samples
    for path in samples:
        a, b = nib.load(path), nib.load(bad / GEN_DIR / "samples_all" / "samples" / path.name)
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj)), path.name
        assert np.array_equal(a.affine, b.affine)
    rows = (ref / SEG_DIR / "per_case.csv").read_text().strip().splitlines()
    print(f"\n[kill/resume] generator SIGKILLed after ckpt {f['gen_killed_after']}/{STEPS}, segmenter killed while "
          f"writing ckpt {f['seg_kill_at'] * EVERY} (resumed from {f['seg_last_good']}); {len(rows) - 1} per-case "
          f"rows and {len(samples)} synthetic volumes bit-identical; reference jobs {f['reference_seconds']:.1f} s, "
          f"resuming sweep {f['resume_seconds']:.1f} s")  # fmt: skip
