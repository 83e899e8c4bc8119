"""The command line's edges: key=value overrides anywhere, output folders that cannot be used, the launchers run
from any folder (the suite is imported as an installed package), and how ``launchers/mlflow_ui.sh`` finds mlflow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from study_fixtures import tiny_study_overrides

from benchmark.config import to_dict
from benchmark.errors import DataError
from benchmark.run.cli import main_guard
from benchmark.run.sweep import main as sweep_main
from benchmark.run.sweep import parse_args, resolve_config
from benchmark.study import writable_folder

REPO = Path(__file__).resolve().parents[1]
UI_SCRIPT = REPO / "launchers" / "mlflow_ui.sh"

# ------------------------------------------------------------------------------------- overrides anywhere

SWEEP_ORDERS = [
    ["--splits", "2", "name=x", "--dry-run", "seeds=[0]"],
    ["name=x", "seeds=[0]", "--splits", "2", "--dry-run"],
    ["--dry-run", "name=x", "--splits", "2", "seeds=[0]"],
    ["--splits", "2", "--dry-run", "name=x", "seeds=[0]"],
]


@pytest.mark.parametrize("argv", SWEEP_ORDERS)
def test_sweep_overrides_anywhere_give_the_same_config(argv):
    args = parse_args(argv)
    assert (args.splits, args.dry_run, args.overrides) == (2, True, ["name=x", "seeds=[0]"])
    cfg, gens = resolve_config(args)
    reference, _ = resolve_config(parse_args(SWEEP_ORDERS[0]))
    assert (cfg.name, cfg.splits.n_splits, list(cfg.seeds)) == ("x", 2, [0])
    assert to_dict(cfg) == to_dict(reference)
    assert gens == ["pix2pix3d", "spade_gan", "spade_ldm", "labels2image"]


def test_sweep_flag_wins_over_the_same_key_given_as_an_override():
    cfg, _ = resolve_config(parse_args(["--splits", "2", "splits.n_splits=4", "--protocol", "shared"]))
    assert (cfg.splits.n_splits, cfg.splits.protocol) == (2, "shared")


def test_single_job_launchers_take_overrides_anywhere():
    from launchers.train_generator import parse_args as gen_args
    from launchers.train_segmenter import parse_args as seg_args

    gen = gen_args(["name=x", "--generator", "pix2pix3d", "seeds=[1]", "--split", "1", "train.threads=1"])
    assert (gen.generator, gen.split, gen.seed) == ("pix2pix3d", 1, 0)
    assert gen.overrides == ["name=x", "seeds=[1]", "train.threads=1"]
    seg = seg_args(["--arm", "real", "name=x", "--ratio", "0.5", "segmentation.steps=3", "--seed", "2"])
    assert (seg.arm, seg.ratio, seg.seed, seg.overrides) == ("real", 0.5, 2, ["name=x", "segmentation.steps=3"])


def test_profile_and_evaluate_launchers_take_overrides_anywhere():
    from launchers.evaluate_generator import parse_args as eval_args
    from launchers.profile_throughput import parse_args as profile_args

    prof = profile_args(["name=x", "--model", "unet", "device=cpu", "--set", "r1_gamma=0", "ddim_steps=50", "--tiny",
                         "seeds=[1]"])  # fmt: skip
    assert (prof.model, prof.tiny, prof.set) == ("unet", True, ["r1_gamma=0", "ddim_steps=50"])
    assert prof.overrides == ["name=x", "device=cpu", "seeds=[1]"]
    ev = eval_args(["metrics.bootstrap=5", "--real", "r", "--synthetic", "s", "metrics.fixed_n=3", "--device", "cpu"])
    assert (ev.real, ev.synthetic, ev.device) == ("r", "s", "cpu")
    assert ev.overrides == ["metrics.bootstrap=5", "metrics.fixed_n=3"]


# ------------------------------------------------------------------------------ unusable output folders


def _sweep_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "launchers" / "sweep.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_output_dir_that_cannot_be_created_is_one_error_line(tmp_path):
    base = tiny_study_overrides(tmp_path, n_splits=1)
    proc = _sweep_cli([*base, "output_dir=/proc/nope", "tracking.enabled=false"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "error: /proc/nope/tiny: cannot create or write the study folder (output_dir=/proc/nope, name=tiny): "
        "No such file or directory (/proc/nope)"
    ]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_a_file_in_the_way_of_the_study_folder_is_named(tmp_path, capsys):
    blocker = tmp_path / "results.txt"
    blocker.write_text("an earlier note\n")
    argv = [*tiny_study_overrides(tmp_path, n_splits=1), f"output_dir={blocker}", "tracking.enabled=false"]
    assert main_guard(lambda: sweep_main(argv)) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {blocker}/tiny: cannot create or write the study folder (output_dir={blocker}, name=tiny): "
        f"{blocker} is a file, not a folder\n"
    )
    assert blocker.read_text() == "an earlier note\n"


def test_data_cache_that_cannot_be_created_fails_before_the_study_folder(tmp_path, capsys):
    argv = [*tiny_study_overrides(tmp_path, n_splits=1), "data.cache_dir=/proc/nope/cache"]
    assert main_guard(lambda: sweep_main(argv)) == 2
    assert capsys.readouterr().err == (
        "error: /proc/nope/cache: cannot create or write the data cache (data.cache_dir=/proc/nope/cache): "
        "No such file or directory (/proc/nope)\n"
    )
    assert not (tmp_path / "tiny").exists()


def test_writable_folder(tmp_path):
    assert writable_folder(tmp_path / "a" / "b", "thing (key=v)") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []  # no probe left
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError) as info:
        writable_folder(tmp_path / "f" / "sub", "thing (key=v)")
    problem = f"cannot create or write the thing (key=v): {tmp_path}/f is a file, not a folder"
    assert str(info.value) == f"{tmp_path}/f/sub: {problem}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(DataError, match=r"/ro: cannot create or write the study folder \(x\): Permission denied$"):
            writable_folder(ro, "study folder (x)")
    finally:
        ro.chmod(0o755)


# --------------------------------------------------------------------------- launchers run from anywhere

SCRIPTS = [
    "launchers/sweep.py", "launchers/train_generator.py", "launchers/train_segmenter.py", "launchers/sample.py",
    "launchers/evaluate_generator.py", "launchers/profile_throughput.py", "analysis/aggregate.py",
    "analysis/cluster_selection.py", "analysis/profile_report.py", "analysis/report.py", "analysis/significance.py",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help_runs_from_another_folder(script, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / script), "--help"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: "), proc.stdout[:200]


def test_no_launcher_shadows_a_standard_module():
    names = {p.stem for d in ("launchers", "analysis") for p in (REPO / d).glob("*.py")}
    assert "profile_throughput" in names
    assert names.isdisjoint(sys.stdlib_module_names)
    for d in ("launchers", "analysis"):
        for p in (REPO / d).glob("*.py"):
            assert "sys.path" not in p.read_text(), p


# ------------------------------------------------------------------------------ mlflow_ui.sh finds mlflow


def _recorder(path: Path, real_python: str) -> Path:
    """A stand-in python: the script's import check goes to ``real_python``; the server call records its args."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/usr/bin/env bash\n[ "$1" = "-I" ] && exec {real_python} "$@"\n'
                    'printf "%s\\n" "$0" "$@" > "$ARGS_OUT"\n')  # fmt: skip
    path.chmod(0o755)
    return path


def _ui(script: Path, study: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if k not in ("MLFLOW", "PYTHON", "VIRTUAL_ENV", "HOST")}
    cmd = [shutil.which("bash"), str(script), str(study), "5123"]
    return subprocess.run(cmd, env=keep | env, capture_output=True, text=True, timeout=120)


@pytest.fixture()
def ui_study(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    (study / "mlflow.db").touch()
    return study


def test_mlflow_ui_runs_mlflow_of_the_given_python(ui_study, tmp_path):
    fake = _recorder(tmp_path / "env" / "bin" / "python", sys.executable)
    proc = _ui(UI_SCRIPT, ui_study, {"PYTHON": str(fake), "ARGS_OUT": str(tmp_path / "args")})
    assert proc.returncode == 0, proc.stderr
    args = (tmp_path / "args").read_text().splitlines()
    assert args[:4] == [str(fake), "-m", "mlflow", "server"]
    assert args[args.index("--backend-store-uri") + 1] == f"sqlite:///{ui_study / 'mlflow.db'}"
    assert args[args.index("--host") + 1] == "127.0.0.1"


def test_mlflow_ui_prefers_the_active_virtual_env_then_the_checkouts(ui_study, tmp_path):
    checkout = tmp_path / "checkout"
    script = checkout / "launchers" / "mlflow_ui.sh"
    script.parent.mkdir(parents=True)
    script.write_text(UI_SCRIPT.read_text())
    venv_py = _recorder(checkout / ".venv" / "bin" / "python", sys.executable)
    active_py = _recorder(tmp_path / "active" / "bin" / "python", sys.executable)
    out = tmp_path / "args"
    assert _ui(script, ui_study, {"VIRTUAL_ENV": str(tmp_path / "active"), "ARGS_OUT": str(out)}).returncode == 0
    assert out.read_text().splitlines()[:3] == [str(active_py), "-m", "mlflow"]
    assert _ui(script, ui_study, {"ARGS_OUT": str(out)}).returncode == 0
    assert out.read_text().splitlines()[:3] == [str(venv_py), "-m", "mlflow"]


def test_mlflow_ui_without_a_suitable_python_says_how_to_choose_one(ui_study, tmp_path):
    script = tmp_path / "checkout" / "launchers" / "mlflow_ui.sh"
    script.parent.mkdir(parents=True)
    script.write_text(UI_SCRIPT.read_text())
    bin_dir = tmp_path / "bin"  # PATH: dirname and two pythons that cannot import the suite
    bin_dir.mkdir()
    os.symlink(shutil.which("dirname"), bin_dir / "dirname")
    for name in ("python3", "python"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    proc = _ui(script, ui_study, {"PATH": str(bin_dir)})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: no python here imports benchmark and mlflow (tried $VIRTUAL_ENV, {tmp_path}/checkout/.venv, python3, "
        "python); set PYTHON=/path/to/python or MLFLOW=/path/to/mlflow"
    ]
    proc = _ui(UI_SCRIPT, ui_study, {"PYTHON": str(bin_dir / "python3")})
    assert (proc.returncode, proc.stderr.strip()) == (
        2,
        f"error: PYTHON={bin_dir}/python3 cannot import benchmark and mlflow (pip install -e . in that environment)",
    )
