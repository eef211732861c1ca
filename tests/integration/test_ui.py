"""`ftcl ui` starts a real MLflow UI on 127.0.0.1 over ftcl's store and stops cleanly on Ctrl-C."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

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
