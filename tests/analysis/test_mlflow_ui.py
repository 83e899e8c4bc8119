"""A sweep's runs in the MLflow UI, checked in a real browser.

Starts ``mlflow server`` on 127.0.0.1 (sqlite store in the test folder), logs a tiny study over HTTP the way a
sweep does, opens the pages the sweep links to in headless Chromium and reads the rendered DOM: the runs table
must list every run of the study; the run-comparison page the compared runs' names, the metric names and every
metric value, each under its own run. Chromium comes from
Debian (``bash scripts/install_chromium.sh``); without it the test skips, or fails when ``LGE_REQUIRE_BROWSER=1``
(as in CI). Set ``LGE_UI_SCREENSHOT_DIR`` to keep the page's screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from server_helpers import free_port, start_mlflow, stop, wait_healthy

from benchmark.analysis.mlflow_source import read_study
from benchmark.tracking.links import runs_table_url
from benchmark.tracking.runs import compare_url, study_ui_lines
from benchmark.tracking.tracker import MLflowTracker, ensure_experiment

# Values with at most three significant decimals: the compare view shows metrics rounded to three digits.
RUNS = {
    "seg/split0/seed0/real": {"mean_dice": 0.812, "mean_hd95": 7.25},
    "seg/split0/seed0/real+spade_ldm": {"mean_dice": 0.846, "mean_hd95": 6.5},
    "seg/split0/seed0/real+pix2pix3d": {"mean_dice": 0.779, "mean_hd95": 8.75},
}
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--no-proxy-server", "--hide-scrollbars",
    "--window-size=1600,1800",  # narrower windows leave the virtualised metric grid's later columns unrendered
]  # fmt: skip


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    reason = "Debian's chromium is not installed (bash scripts/install_chromium.sh)"
    if os.environ.get("LGE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"LGE_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mlflow server`` on a free 127.0.0.1 port. One worker: two took 50-57 s to start on a loaded 2-core box."""
    _chromium()  # skip (or fail) before paying for the server
    tmp = tmp_path_factory.mktemp("mlflow_ui")
    port = free_port()
    log = tmp / "server.log"
    proc = start_mlflow(f"sqlite:///{tmp / 'mlflow.db'}", port, tmp, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, log, timeout=90)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("NO_PROXY", "127.0.0.1,localhost")
            yield url, tmp
    finally:
        stop(proc)


def _log_study(uri: str, tmp: Path) -> tuple[str, list[str]]:
    """A parent sweep run and one child segmentation run per arm, as ``benchmark.run.job`` logs them."""
    exp = ensure_experiment(uri, "ui_study")
    parent = MLflowTracker(uri, exp, "sweep/ui_study", {"kind": "sweep", "protocol": "per_split"})
    ids = []
    for name, metrics in RUNS.items():
        arm = name.rsplit("/", 1)[1]
        tags = {"kind": "segmentation", "job_key": name, "split": 0, "seed": 0, "arm": arm,
                "generator": arm.removeprefix("real").lstrip("+"), "config_hash": "c0ffee"}  # fmt: skip
        run = MLflowTracker(uri, exp, name, tags, parent.run_id)
        run.log_params({"segmentation.steps": 40})
        run.log_metrics(metrics)
        rows = pd.DataFrame({"study": "ui_study", "split": 0, "seed": 0, "generator": tags["generator"], "arm": arm,
                             "case_id": ["p01", "p02"], "metric": "dice", "value": metrics["mean_dice"], "reason": "",
                             "backbone": ""})  # fmt: skip
        csv = tmp / f"{arm}.csv"
        rows.to_csv(csv, index=False)
        run.log_artifact(_as_per_case(csv))
        run.end("FINISHED")
        ids.append(run.run_id)
    parent.end("FINISHED")
    return exp, ids


def _as_per_case(csv: Path) -> Path:
    folder = csv.with_suffix("")
    folder.mkdir()
    return csv.rename(folder / "per_case.csv")


class _Text(HTMLParser):
    """The page's visible text nodes in document order (scripts and styles left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style")

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.lines.append(data.strip())


def _render(url: str, tmp: Path, budget_ms: int) -> tuple[list[str], Path]:
    """DOM text and a screenshot of ``url`` after ``budget_ms`` of virtual time (the UI keeps polling)."""
    shot = tmp / "compare.png"
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", f"--virtual-time-budget={budget_ms}",
           f"--screenshot={shot}", "--dump-dom", url]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"chromium failed ({out.returncode}):\n{out.stderr[-2000:]}"
    parser = _Text()
    parser.feed(out.stdout)
    return parser.lines, shot


def _section(lines: list[str], title: str, width: int) -> list[str]:
    """The ``width`` text nodes after a comparison section's title and its "Show diff only" switch."""
    for i in range(len(lines) - 1):
        if lines[i] == title and lines[i + 1] == "Show diff only":
            return lines[i + 2 : i + 2 + width]
    raise AssertionError(f"no '{title}' section on the page; its text: {lines[:200]}")


@pytest.fixture(scope="module")
def study(server, tmp_path_factory):
    """The tiny study, logged once for every page checked."""
    uri, _ = server
    exp, ids = _log_study(uri, tmp_path_factory.mktemp("logged"))
    return uri, exp, ids


def _until(url: str, tmp: Path, names: list[str]) -> tuple[list[str], Path]:
    for budget in (15000, 40000):  # a slow machine may need more virtual time before the runs have loaded
        lines, shot = _render(url, tmp, budget)
        if all(n in lines for n in names):
            break
    return lines, shot


def test_sweep_links_open_the_runs_table_and_the_arms_of_one_split(study, tmp_path):
    uri, exp, ids = study
    lines = study_ui_lines(uri, "ui_study")
    table = f"{uri}/#/experiments/{exp}/runs?orderByKey=tags.%60mlflow.runName%60&orderByAsc=true"
    assert lines[0] == f"MLflow runs table: {table}" == f"MLflow runs table: {runs_table_url(uri, exp)}"
    names = [*RUNS, "sweep/ui_study"]
    page, _ = _until(table, tmp_path, names)
    assert "Training runs" in page and "ui_study" in page  # the study's runs table, not the GenAI overview
    rows = [line for line in page if line in names]
    assert rows == sorted(names)  # every job on its own row, by name (not folded under the sweep's parent run)

    label, link = lines[1].removeprefix("MLflow compare arms (").split("): ")
    assert label == "split 0, seed 0"
    arms = ["seg/split0/seed0/real", "seg/split0/seed0/real+pix2pix3d", "seg/split0/seed0/real+spade_ldm"]
    assert link == compare_url(uri, exp, [ids[list(RUNS).index(a)] for a in arms])  # baseline first, then by name
    page, _ = _until(link, tmp_path, arms)
    assert "Comparing 3 Runs from 1 Experiment" in page, page[:60]
    start = page.index("Run Name:")
    assert page[start + 1 : start + 4] == arms


def test_compare_page_shows_runs_metrics_and_values(study, tmp_path):
    uri, exp, ids = study
    url = compare_url(uri, exp, ids)
    assert url == (f"{uri}/#/compare-runs?runs=" + urllib.request.quote(json.dumps(ids, separators=(",", ":")))
                   + "&experiments=%5B%22" + exp + "%22%5D")  # fmt: skip
    names = list(RUNS)
    lines, shot = _until(url, tmp_path, names)
    assert f"Comparing {len(ids)} Runs from 1 Experiment" in lines, lines[:60]
    start = lines.index("Run Name:")
    assert lines[start + 1 : start + 1 + len(names)] == names  # one column per run, in the order asked for

    metrics = sorted(RUNS[names[0]])
    cells = _section(lines, "Metrics", len(metrics) * (1 + len(names)))
    assert cells[: len(metrics)] == metrics  # metric names, then the values row by row
    shown = [float(v) for v in cells[len(metrics) :]]
    assert shown == [RUNS[n][m] for m in metrics for n in names]

    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000  # a rendered page, not a blank one
    if os.environ.get("LGE_UI_SCREENSHOT_DIR"):
        Path(os.environ["LGE_UI_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["LGE_UI_SCREENSHOT_DIR"]) / "mlflow_compare.png")

    # the analysis reads the same runs back over HTTP (artifacts through the server's proxy)
    study = read_study(uri, "ui_study")
    seg = study.frames.seg
    assert sorted(study.runs) == sorted(names)
    assert seg.groupby("arm")["value"].first().to_dict() == {n.rsplit("/", 1)[1]: RUNS[n]["mean_dice"] for n in names}
