"""`ftcl ui` starts a real MLflow UI on 127.0.0.1 over ftcl's store, stops cleanly on Ctrl-C, and
opens the training runs and their curves (checked in headless Chromium)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from ftcl.spec import REPO_ROOT
from ftcl_cli import free_port

pytestmark = pytest.mark.slow


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_ui_serves_and_stops(tmp_path):
    port = free_port()
    env = {**os.environ, "FTCL_HOME": str(tmp_path / "home")}
    process = subprocess.Popen([sys.executable, "-m", "ftcl.cli", "ui", "--port", str(port)], cwd=REPO_ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        deadline, status = time.time() + 90, None
        while time.time() < deadline and process.poll() is None:
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status
                break
            except OSError:
                time.sleep(1)
        assert status == 200, "MLflow UI did not answer on /health"
        experiments = urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10", timeout=5).read()
        assert b"experiments" in experiments
        assert (tmp_path / "home" / "mlflow.db").is_file(), "the UI must serve ftcl's SQLite store"
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert f"http://127.0.0.1:{port}" in output
    time.sleep(1)
    assert not group_alive(process.pid), "the MLflow server processes must stop with `ftcl ui`"


def chromium_dom(url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran, in headless Chromium (a new, empty profile: no stored
    choice of the UI's view)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (`apt-get install chromium`; .ci/run installs it)")
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", "--virtual-time-budget=30000", "--dump-dom", url],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_ui_opens_the_training_runs_and_their_curves_in_headless_chromium(tmp_path):
    """As a new user meets it: `ftcl ui` prints a link per experiment that opens its runs table in
    the model-training view (MLflow 3.17 opens in its GenAI view otherwise); the table lists the
    trials and not the report run; the chart view draws an `evaluation/*` metric."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from ftcl.tracking.store import REPORTS_SUFFIX, ensure_experiment

    home = tmp_path / "home"
    home.mkdir()
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client, experiment = MlflowClient(uri), ensure_experiment(uri, "apple_ui")
    for method in ("finetune", "bc"):
        run = client.create_run(experiment, run_name=f"{method}__seed0", tags={"method": method, "seed": "0"})
        client.log_batch(run.info.run_id, metrics=[Metric("evaluation/far/success", value, 0, step)
                                                   for step, value in ((0, 1.0), (500, 0.6), (1000, 0.2))])
        client.set_terminated(run.info.run_id)
    client.create_run(ensure_experiment(uri, "apple_ui" + REPORTS_SUFFIX), run_name="report")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "ftcl.cli", "ui", "--port", str(port)], cwd=REPO_ROOT,
                               env={**os.environ, "FTCL_HOME": str(home)}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(1)
        links = [line.split(": ", 1)[1].strip() for line in list(lines) if line.startswith("  apple_ui")]
        assert links == [f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs?workflowType=machine_learning"], lines
        assert not any(line.startswith(f"  apple_ui{REPORTS_SUFFIX}") for line in lines), "no link to the reports"
        table = chromium_dom(links[0], tmp_path / "profile_table")
        assert "finetune__seed0" in table and "bc__seed0" in table and "<strong>2</strong> matching runs" in table
        assert ">report<" not in table, "the report run is not among the trials"
        charts = chromium_dom(links[0] + "&compareRunsMode=CHART", tmp_path / "profile_charts")
        assert "evaluation/far/success" in charts and "finetune__seed0" in charts
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
