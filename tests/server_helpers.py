"""Servers the tests start and stop: ``mlflow server`` (through ``launchers/mlflow_ui.sh`` or
directly) and a private PostgreSQL cluster. Everything binds to 127.0.0.1 on a free port."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MLFLOW = Path(sys.executable).with_name("mlflow")
UI_SCRIPT = REPO / "launchers" / "mlflow_ui.sh"
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "NO_PROXY": "127.0.0.1,localhost"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    try:
        with opener.open(url + "/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout: float = 150.0) -> float:
    """Seconds until ``url`` answers /health; raises with the server log's tail when it dies or times out."""
    t0 = time.monotonic()
    while not healthy(url):
        if proc.poll() is not None or time.monotonic() - t0 > timeout:
            tail = log.read_text()[-3000:] if log.is_file() else ""
            stop(proc)
            raise RuntimeError(f"server did not come up on {url} (exit {proc.poll()}):\n{tail}")
        time.sleep(0.25)
    return time.monotonic() - t0


def stop(proc: subprocess.Popen) -> None:
    """Stop a server's whole process group (uvicorn runs its workers as children)."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


def start_ui(study: Path, port: int, cwd: Path, log: Path) -> subprocess.Popen:
    """``launchers/mlflow_ui.sh <study> <port>`` with its defaults (no HOST given)."""
    # PYTHON: the script's mlflow is the one of the environment running the tests, wherever that is installed
    env = {k: v for k, v in os.environ.items() if k != "HOST"} | SERVER_ENV | {"PYTHON": sys.executable}
    with open(log, "a") as fh:
        return subprocess.Popen(["bash", str(UI_SCRIPT), str(study), str(port)], cwd=cwd, env=env, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def start_mlflow(
    backend: str, port: int, cwd: Path, log: Path, *, app_name: str | None = None, env: dict | None = None
) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1 with one worker and artifacts served from ``cwd/artifacts``; ``app_name``
    (``basic-auth``) and ``env`` (its settings) for a server with MLflow's own authentication."""
    cmd = [str(MLFLOW), "server", "--backend-store-uri", backend, "--artifacts-destination", str(cwd / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    cmd += ["--app-name", app_name] if app_name else []
    with open(log, "a") as fh:
        return subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **SERVER_ENV, **(env or {})}, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def start_auth_mlflow(root: Path, admin_password: str) -> tuple[subprocess.Popen, str]:
    """``mlflow server --app-name basic-auth`` with its user database, config and store under ``root``; returns the
    process and its URL once it answers (admin user ``admin``; needs the ``mlflow[auth]`` extra). Checked
    credentials are cached: PBKDF2 on every request makes a study's logging several times slower."""
    ini = root / "basic_auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{root / 'basic_auth.db'}\n"
                   "admin_username = admin\nauth_cache_ttl_seconds = 300\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")  # fmt: skip
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex()}  # fmt: skip
    port, log = free_port(), root / "server.log"
    proc = start_mlflow(f"sqlite:///{root / 'mlflow.db'}", port, root, log, app_name="basic-auth", env=env)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url, log)
    return proc, url


def listening(port: int) -> list[str]:
    """Local addresses listening on TCP ``port`` (from ``ss -ltnH``)."""
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if line.split()[3].rsplit(":", 1)[-1] == str(port)]


# ------------------------------------------------------------------------------------------------ PostgreSQL


def postgres_bindir() -> Path | None:
    """Folder of Debian's PostgreSQL server binaries (initdb, pg_ctl), newest version first."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (data, socket and log in a private temp folder).

    Run as the ``postgres`` user when the tests run as root (initdb refuses root).
    """

    def __init__(self, bindir: Path):
        import tempfile

        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="lge-pg-"))
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 120) -> None:
        out = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({out.returncode}): {out.stderr[-2000:]}")

    def start(self) -> str:
        """initdb, start, create the ``mlflow`` database; returns its SQLAlchemy URI (psycopg2 driver)."""
        data = self.root / "data"
        self._run(str(self.bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync", "--no-instructions")  # fmt: skip
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=200"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(self.root / "postgres.log"), "-o", opts,
                  "-w", "-t", "120", "start")  # fmt: skip
        self._run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "mlflow")
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/mlflow"

    def query(self, sql: str) -> str:
        psql = self.bindir / "psql" if (self.bindir / "psql").exists() else Path(shutil.which("psql") or "psql")
        out = subprocess.run([str(psql), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "mlflow",
                              "-tAc", sql], capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        return out.stdout.strip()

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
