"""`cluster/submit.sh` against a real single-node Ray cluster (`ray start --head`): the job runs
`ftcl run` with `--address auto` and its runs land in MLflow."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ftcl.spec import REPO_ROOT
from ftcl_cli import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head with a dashboard, started in the foreground (`--block`) so its PID ends it."""
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}"}
    gcs_port, dashboard_port = free_port(), free_port()
    # Every fixed default port gets a free one, so another Ray on this machine (e.g. a user's
    # `ftcl run`) cannot take the head's job agent port ("No available agent to submit job").
    agent_ports = [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port",
    )]
    head = subprocess.Popen(
        [f"{venv_bin}/ray", "start", "--head", f"--port={gcs_port}", f"--dashboard-port={dashboard_port}",
         *agent_ports, "--num-cpus=2", "--include-dashboard=true", "--block"],
        env=env, stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard_port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{address}/api/version", timeout=2)
            break
        except urllib.error.HTTPError:  # up, but wants the auth token: ready
            break
        except OSError:
            assert head.poll() is None, (tmp_path / "head.log").read_text()[-3000:]
            time.sleep(1)
    yield address, env
    os.killpg(head.pid, signal.SIGTERM)  # the head's own process group: only what this test started
    head.wait(timeout=60)


def test_submit_script_runs_an_experiment_as_a_ray_job(ray_head, tmp_path):
    address, env = ray_head
    home = tmp_path / "home"
    result = subprocess.run(
        ["bash", "cluster/submit.sh", address, "tune_configs/toys/two_state_mdp.yaml", "--set", "budget.env_steps=300"],
        cwd=REPO_ROOT, env={**env, "FTCL_HOME": str(home)}, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "succeeded" in result.stdout + result.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("two_state_mdp")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2 and all(run.info.status == "FINISHED" for run in runs)
    (coverage_gap,) = [run for run in runs if "coverage_gap" in run.data.tags["ftcl.variant"]]
    assert coverage_gap.data.metrics["theta"] == pytest.approx(1 / 9, abs=0.002)  # the poor local optimum


def test_submit_script_usage_error():
    result = subprocess.run(["bash", "cluster/submit.sh"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "usage:" in result.stderr
