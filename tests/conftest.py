"""Shared fixtures: the single-node Slurm test cluster (started by slurm/start.sh; CI sets LGE_REQUIRE_SLURM=1)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

DEFAULT_RUN_DIR = Path("/tmp/lge-slurm")
START_HINT = "start it with `sudo bash slurm/install.sh && sudo bash slurm/start.sh` (see slurm/README.md)"


def _read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export ") :].split("=", 1)
            env[key.strip()] = value.strip()
    return env


def _cluster_env() -> tuple[dict[str, str], str]:
    """Environment of the running test cluster, or ({}, why not)."""
    env_file = Path(os.environ.get("LGE_SLURM_DIR", DEFAULT_RUN_DIR)) / "env.sh"
    if env_file.is_file():
        env = _read_env_file(env_file)
    elif os.environ.get("SLURM_CONF"):
        env = {"SLURM_CONF": os.environ["SLURM_CONF"]}
    else:
        return {}, f"no test cluster found ({env_file} does not exist and SLURM_CONF is not set)"
    env.setdefault("LGE_SLURM_PARTITION", "debug")
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-p", env["LGE_SLURM_PARTITION"], "-o", "%T"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {}, f"sinfo failed ({exc})"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s in ("idle", "mixed", "allocated", "completing") for s in states):
        detail = (out.stderr.strip() or " ".join(states) or "no node").splitlines()[0]
        return {}, f"the Slurm cluster at {env['SLURM_CONF']} is not up ({detail})"
    return env, ""


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    env, problem = _cluster_env()
    if problem:
        message = f"{problem}: {START_HINT}"
        if os.environ.get("LGE_REQUIRE_SLURM") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield env
