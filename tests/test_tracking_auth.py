"""A shared tracking server with MLflow's own authentication (``mlflow server --app-name basic-auth``).

A tiny study logs with credentials from the environment and writes them into no file; wrong or missing
credentials stop the sweep with one line before anything is prepared or submitted; ``~/.netrc`` works too; the
spool replays with the same credentials; credentials in the tracking URI or the config are refused.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from unittest import mock

import pytest
from server_helpers import start_auth_mlflow, stop
from study_fixtures import tiny_study_overrides

pytest.importorskip("flask_wtf", reason="the basic-auth app needs the mlflow[auth] extra")

from benchmark.errors import ConfigError, TrackingError  # noqa: E402
from benchmark.tracking.tracker import MLflowTracker, check_reachable, ensure_experiment, replay_spool  # noqa: E402

USER, PASSWORD = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server, its admin password and a user ``alice`` with a fresh password."""
    from mlflow.server import get_app_client

    root = tmp_path_factory.mktemp("auth_server")
    admin_pw, alice_pw = f"adm-{secrets.token_hex(12)}", f"alc-{secrets.token_hex(12)}"
    proc, url = start_auth_mlflow(root, admin_pw)
    try:
        with mock.patch.dict(os.environ, {USER: "admin", PASSWORD: admin_pw}):
            get_app_client("basic-auth", tracking_uri=url).create_user("alice", alice_pw)
        yield {"url": url, "root": root, "admin": admin_pw, "alice": alice_pw}
    finally:
        stop(proc)


@pytest.fixture()
def no_netrc(monkeypatch, tmp_path):
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # never the user's own ~/.netrc
    for key in (USER, PASSWORD, "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)


def _files_holding(secret: str, *roots: Path) -> list[str]:
    needle = secret.encode()
    return [str(p) for root in roots for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_tiny_study_logs_with_env_credentials_and_writes_them_nowhere(server, tmp_path, monkeypatch, capfd, no_netrc):
    from mlflow.tracking import MlflowClient

    from benchmark.analysis.mlflow_source import read_study, study_config_hashes
    from benchmark.run.sweep import main

    monkeypatch.setenv(USER, "alice")
    monkeypatch.setenv(PASSWORD, server["alice"])
    # the smallest study: no generator, one split, the real arm only (a parent run and one segmentation run)
    args = ["--generators", ",", "--executor", "debug", "--tracking-uri", server["url"],
            *tiny_study_overrides(tmp_path, n_splits=1), "segmentation.arms=[real]"]  # fmt: skip
    assert main(args) == 0
    printed = capfd.readouterr()

    client = MlflowClient(server["url"])
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    names = {r.info.run_name: r.info.status for r in runs}
    assert names == {"sweep/tiny": "FINISHED", "seg/split0/seed0/real": "FINISHED"}

    # no credential in any file of the study (config.yaml, state, logs, spool, done.json, report, ...), the
    # artifacts the server keeps, any logged parameter or tag, or the terminal output
    for secret in (server["alice"], server["admin"]):
        assert _files_holding(secret, tmp_path, server["root"] / "artifacts") == []
        assert secret not in printed.out + printed.err
        for run in runs:
            assert secret not in repr(run.data.params) + repr(run.data.tags)
    assert (tmp_path / "tiny" / "config.yaml").is_file()  # the walk did see the study's files

    # read back with the study folder's config hashes: the runs of this study, as its state recorded them
    study = read_study(server["url"], "tiny", config_hashes=study_config_hashes(tmp_path / "tiny"))
    assert sorted(study.runs) == ["seg/split0/seed0/real"]
    assert set(study.frames.seg.arm) == {"real"}


def test_wrong_or_missing_credentials_stop_the_sweep_at_once_with_one_line(server, tmp_path, monkeypatch, no_netrc):
    from benchmark.run.sweep import main

    args = ["--tracking-uri", server["url"], *tiny_study_overrides(tmp_path, n_splits=1)]
    wrong = f"wrong-{secrets.token_hex(8)}"
    monkeypatch.setenv(USER, "alice")
    monkeypatch.setenv(PASSWORD, wrong)
    t0 = time.monotonic()
    with pytest.raises(TrackingError) as err:
        main(args)
    assert time.monotonic() - t0 < 10  # no retry loop
    text = str(err.value)
    assert text == (f"MLflow server {server['url']} refused the credentials of {USER}/{PASSWORD} (401): "
                    f"check {USER}/{PASSWORD} or ~/.netrc")  # fmt: skip
    monkeypatch.delenv(USER)
    monkeypatch.delenv(PASSWORD)
    with pytest.raises(TrackingError, match=rf"requires authentication \(401\): set {USER} and {PASSWORD}") as err:
        main(args)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "tiny").exists()  # refused before the study folder was written

    from benchmark.run.cli import main_guard

    assert main_guard(lambda: main(args)) == 2  # the launchers: "error: <that line>", exit code 2


def test_netrc_credentials(server, tmp_path, monkeypatch, no_netrc):
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login alice password {server['alice']}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    check_reachable(server["url"])  # accepted
    netrc.write_text("machine 127.0.0.1 login alice password not-hers\n")
    with pytest.raises(TrackingError, match=rf"refused the credentials of {netrc} \(host 127.0.0.1\) \(401\)"):
        check_reachable(server["url"])


def test_spool_replays_with_the_same_env_credentials(server, tmp_path, monkeypatch, no_netrc):
    from mlflow.tracking import MlflowClient

    from benchmark.tracking.spool import Spool

    monkeypatch.setenv(USER, "alice")
    monkeypatch.setenv(PASSWORD, server["alice"])
    exp = ensure_experiment(server["url"], "spooled")
    tracker = MLflowTracker(server["url"], exp, "seg/split0/seed0/real", {"job_key": "k"}, spool_dir=tmp_path)
    # what a run kept while the server was away, closed at its end: replayed later by the next tracker or by hand
    spool = Spool(tmp_path, {"uri": server["url"], "run_id": tracker.run_id, "run_name": "k"})
    spool.append([{"op": "batch", "metrics": [["dice", 0.8, int(time.time() * 1000), 3]]},
                  {"op": "end", "status": "FINISHED", "error": None}])  # fmt: skip
    spool.close()
    assert _files_holding(server["alice"], tmp_path) == []  # the spool keeps the URI, never a credential

    monkeypatch.setenv(PASSWORD, "not-hers")
    with pytest.raises(TrackingError, match=r"refused the credentials of .* \(401\)"):
        replay_spool(tmp_path, server["url"])
    assert len(list(tmp_path.glob("*.jsonl"))) == 1  # kept for a later replay, nothing lost
    monkeypatch.setenv(PASSWORD, server["alice"])
    assert replay_spool(tmp_path, server["url"]) == {"runs": 1, "ops": 2, "left": 0}
    run = MlflowClient(server["url"]).get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["dice"] == 0.8


def test_credentials_in_the_uri_or_config_are_refused(tmp_path):
    from benchmark.run.sweep import main

    secret = secrets.token_hex(8)
    with pytest.raises(TrackingError, match=r"http://alice:\*\*\*@127.0.0.1:9/: a password in the tracking URI") as e:
        main(["--tracking-uri", f"http://alice:{secret}@127.0.0.1:9/", *tiny_study_overrides(tmp_path)])
    assert secret not in str(e.value)
    with pytest.raises(ConfigError, match=rf"cluster.env: {PASSWORD} must not be set in a config"):
        main([*tiny_study_overrides(tmp_path), f"cluster.env={{{PASSWORD}: {secret}}}"])
    assert not (tmp_path / "tiny").exists()


def test_every_entry_point_refuses_credentials_when_the_config_loads(tmp_path):
    # the single-job launchers and sample.py load the same config: the refusal is in the config's sections
    from benchmark.config import load_config

    secret = secrets.token_hex(8)
    with pytest.raises(ConfigError, match=rf"^cluster.env: {PASSWORD} must not be set in a config") as e:
        load_config(None, [*tiny_study_overrides(tmp_path), f"cluster.env={{{PASSWORD}: {secret}}}"])
    assert secret not in str(e.value)
    with pytest.raises(TrackingError, match=r"a password in the tracking URI") as e:
        load_config(None, [*tiny_study_overrides(tmp_path), f"tracking.uri=http://alice:{secret}@127.0.0.1:9/"])
    assert secret not in str(e.value) and not (tmp_path / "tiny").exists()
