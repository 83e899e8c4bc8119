"""Network exposure: servers bind to 127.0.0.1 unless the user names a host; no shell command is built from strings.

The real binding of ``launchers/mlflow_ui.sh`` and of the servers the suite starts is checked with ``ss`` where
they run (``test_tracking_outage.py``, ``test_postgres_backend.py``); here the scripts' defaults and the code are
checked statically, and ``mlflow_ui.sh`` is run with a stand-in ``mlflow`` that records its arguments.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("benchmark", "launchers", "analysis", "benchmarks")
SHELL_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput"),
               ("asyncio", "create_subprocess_shell")}  # fmt: skip
SUBPROCESS = {"run", "Popen", "call", "check_call", "check_output"}


def _python_files() -> list[Path]:
    return sorted(p for d in CODE_DIRS for p in (REPO / d).rglob("*.py") if ".venv" not in p.parts)


def _dotted(node: ast.AST) -> tuple[str, ...]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts))


def _problems(path: Path, root: Path = REPO) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{path.relative_to(root)}:{node.lineno}"
        if name[-2:] in SHELL_CALLS:
            out.append(f"{where}: {'.'.join(name)} runs a shell")
        if name[-1:] and name[-1] in SUBPROCESS and name[:1] == ("subprocess",):
            shell = [k for k in node.keywords if k.arg == "shell"]
            if shell and not (isinstance(shell[0].value, ast.Constant) and shell[0].value.value is False):
                out.append(f"{where}: subprocess.{name[-1]} with shell=")
            if node.args and isinstance(node.args[0], ast.JoinedStr | ast.BinOp | ast.Constant):
                out.append(f"{where}: subprocess.{name[-1]} given a command string, not an argument list")
    return out


def test_no_shell_command_is_built_from_strings():
    files = _python_files()
    assert len(files) > 20
    problems = [p for f in files for p in _problems(f)]
    assert problems == []


def test_the_checker_catches_shell_calls(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os, subprocess\nos.system('ls ' + x)\nsubprocess.run(f'sbatch {x}', shell=True)\n"
                      "subprocess.run(['ls', x])\n")  # fmt: skip
    found = _problems(sample, tmp_path)
    assert [f.split(":")[1] for f in found] == ["2", "3", "3"]  # os.system; shell=True and a command string


def test_slurm_jobs_go_through_submitit():
    """sbatch/srun are never called by the suite's code: submitit writes and submits the batch files."""
    for path in _python_files():
        tree = ast.parse(path.read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, ast.Module | ast.FunctionDef |
                ast.ClassDef) and n.body and isinstance(n.body[0], ast.Expr)}  # fmt: skip
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                assert not re.match(r"^\s*(sbatch|srun|scancel|salloc)\b", node.value), f"{path}: {node.value!r}"
    cluster = (REPO / "benchmark" / "run" / "slurm.py").read_text()
    assert 'submitit.AutoExecutor(folder=folder, cluster="slurm"' in cluster


def test_no_server_binds_every_interface():
    roots = [*CODE_DIRS, "scripts", "slurm", "tests"]
    me = Path(__file__).resolve()
    hits = []
    for d in roots:
        for path in (REPO / d).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".sh", ".conf", ".cnf", ".yaml") and path.resolve() != me:
                text = path.read_text(errors="replace")
                hits += [f"{path.relative_to(REPO)}: {m}" for m in re.findall(r".*0\.0\.0\.0.*", text)]
    assert hits == []
    hosts = []
    for path in (REPO / "tests").rglob("*.py"):  # every server a test starts (tests/server_helpers.py) names 127.0.0.1
        if path.resolve() != me:
            hosts += [(path, m.group(1)) for m in re.finditer(r'"--host",\s*("[^"]*"|\S+)', path.read_text())]
    assert hosts and all(h == '"127.0.0.1"' for _, h in hosts), hosts
    assert "bind-address=127.0.0.1" in (REPO / "slurm" / "templates" / "mariadb.cnf").read_text()


@pytest.fixture()
def fake_mlflow(tmp_path):
    """A stand-in for the ``mlflow`` executable that writes its arguments, one per line, and exits."""
    fake = tmp_path / "mlflow"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$ARGS_OUT"\n')
    fake.chmod(0o755)
    study = tmp_path / "study"
    study.mkdir()
    (study / "mlflow.db").touch()
    return fake, study


@pytest.mark.parametrize("host, expected", [(None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")])
def test_mlflow_ui_binds_loopback_unless_a_host_is_given(fake_mlflow, tmp_path, host, expected):
    fake, study = fake_mlflow
    env = {k: v for k, v in os.environ.items() if k != "HOST"} | {"MLFLOW": str(fake), "ARGS_OUT": str(tmp_path / "a")}
    if host:
        env["HOST"] = host  # the user's explicit choice
    proc = subprocess.run(["bash", str(REPO / "launchers" / "mlflow_ui.sh"), str(study), "5123"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    args = (tmp_path / "a").read_text().splitlines()
    assert args[args.index("--host") + 1] == expected
    assert args[args.index("--port") + 1] == "5123"
    assert args[args.index("--backend-store-uri") + 1] == f"sqlite:///{study / 'mlflow.db'}"
