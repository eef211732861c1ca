"""A grid on a real multi-node Ray cluster on this machine (a head and two one-CPU worker nodes),
logging to a real MLflow tracking server: submitted with `ftcl run --address` and with
`cluster/submit.sh` (`ray job submit`), its trials run on both worker nodes (the node ids the trials
report) and every run lands in the server once, with every evaluation step once; and a grid that
loses a node mid-run finishes with nothing lost or doubled."""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from ftcl.spec import REPO_ROOT
from local_cluster import LocalCluster, TrackingServer

pytestmark = pytest.mark.slow

BUDGET, EVERY = 1000, 500
SPEC = {
    "env": {"name": "apple_retrieval", "options": {"apple_distance": 5}},
    "algorithm": {"name": "ppo", "model": "linear_policy",
                  "options": {"lr": 0.01, "train_batch_size_per_learner": 500, "minibatch_size": 100, "num_epochs": 2}},
    "methods": [{"name": "scratch"}],
    "seeds": [0, 1],  # two one-CPU trials at once on two one-CPU nodes: one on each
    "budget": {"env_steps": BUDGET},
    "evaluation": {"suites": ["far"], "every_env_steps": EVERY, "episodes": 2},
    "tracking": {"dashboard": "apple_retrieval"},
    "resources": {"checkpoint_every_iterations": 1},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    started = LocalCluster(tmp_path_factory.mktemp("ray_cluster"), workers=2)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    server = TrackingServer(tmp_path_factory.mktemp("mlflow_server"))
    yield server
    server.stop()


def write_spec(folder, name):
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **SPEC}))
    return path


def check_runs(tracking, experiment_name, cluster):
    """Every trial once in the server, FINISHED, each evaluation step once; the worker nodes used."""
    client = MlflowClient(tracking_uri=tracking.uri)
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None, f"no experiment {experiment_name!r} in the tracking server"
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.data.tags["ftcl.trial"] for run in runs) == [f"scratch__seed{s}" for s in SPEC["seeds"]]
    nodes = set()
    for run in runs:
        assert run.info.status == "FINISHED", run.data.tags["ftcl.trial"]
        steps = collections.Counter(m.step for m in client.get_metric_history(run.info.run_id, "evaluation/far/success"))
        assert set(steps) == set(range(0, BUDGET + 1, EVERY)) and max(steps.values()) == 1, steps
        nodes.update(run.data.tags["ftcl.nodes"].split(","))
    workers = {node for name, node in cluster.node_ids().items() if name != "head"}
    assert len(workers) == 2 and len(cluster.node_addresses()) == 1, "two workers, all on this machine"
    assert nodes <= workers, "trials ran on the worker nodes (the head has no CPU)"
    assert len(nodes) == 2, f"the grid used both worker nodes, not only {nodes}"


def test_ftcl_run_address_spreads_a_grid_over_the_nodes_and_logs_to_the_server(cluster, tracking, tmp_path):
    spec = write_spec(tmp_path, "multinode_run")
    env = {**cluster.env, "FTCL_HOME": str(tmp_path / "home"), "MLFLOW_TRACKING_URI": tracking.uri}
    result = subprocess.run([sys.executable, "-m", "ftcl.cli", "run", str(spec), "--address", cluster.address],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    check_runs(tracking, "multinode_run", cluster)
    assert not (tmp_path / "home" / "mlflow.db").exists(), "nothing went to the home's SQLite store"


def test_submit_script_runs_the_grid_as_a_ray_job_on_the_nodes(cluster, tracking, tmp_path):
    spec = write_spec(tmp_path, "multinode_job")
    env = {**cluster.env, "FTCL_HOME": str(tmp_path / "home"), "MLFLOW_TRACKING_URI": tracking.uri}
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(["bash", "cluster/submit.sh", cluster.dashboard, str(spec)],  # one machine: any path
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    check_runs(tracking, "multinode_job", cluster)


def test_a_grid_survives_the_loss_of_a_node(cluster, tracking, tmp_path):
    """Worker node 1 is killed (its raylet and workers, SIGKILL) while a trial runs there, between
    checkpoints: that trial restarts on node 0 from its last checkpoint, and the tracking server holds
    every evaluation step of every run exactly once. Runs last in this module: the node stays lost."""
    import time

    budget = 6000
    spec = tmp_path / "multinode_loss.yaml"
    spec.write_text(yaml.safe_dump({"name": "multinode_loss", **SPEC, "seeds": [0, 1], "budget": {"env_steps": budget},
                                    "resources": {"checkpoint_every_iterations": 2}}))
    env = {**cluster.env, "FTCL_HOME": str(tmp_path / "home"), "MLFLOW_TRACKING_URI": tracking.uri}
    driver = subprocess.Popen([sys.executable, "-m", "ftcl.cli", "run", str(spec), "--address", cluster.address],
                              cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    lost = cluster.node_ids()["worker1"]
    client = MlflowClient(tracking_uri=tracking.uri)
    deadline = time.time() + 600
    try:
        while time.time() < deadline and driver.poll() is None:  # node 1's trial past its first checkpoints
            experiment = client.get_experiment_by_name("multinode_loss")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            there = [r for r in runs if r.data.tags.get("ftcl.nodes") == lost]
            if there and len(client.get_metric_history(there[0].info.run_id, "evaluation/far/success")) >= 3:
                break
            time.sleep(1)
        assert driver.poll() is None, driver.stdout.read()[-4000:]
        cluster.stop_worker(1)
        output, _ = driver.communicate(timeout=900)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, output[-4000:]
    runs = client.search_runs([client.get_experiment_by_name("multinode_loss").experiment_id])
    assert len(runs) == 2
    moved = [run for run in runs if run.data.tags["ftcl.nodes"] == f"{lost},{cluster.node_ids()['worker0']}"]
    assert len(moved) == 1, [run.data.tags["ftcl.nodes"] for run in runs]
    for run in runs:
        assert run.info.status == "FINISHED"
        steps = collections.Counter(m.step for m in client.get_metric_history(run.info.run_id, "evaluation/far/success"))
        assert set(steps) == set(range(0, budget + 1, EVERY)) and max(steps.values()) == 1, steps


def test_submit_script_usage_error():
    result = subprocess.run(["bash", "cluster/submit.sh"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "usage:" in result.stderr
