"""Faults injected into real runs (issue 11): a trial's worker SIGKILLed mid-run, the driver
interrupted with SIGINT, and the driver's whole process group SIGKILLed. After each, the MLflow
store is counted per (run, metric key, step): every evaluation step is there exactly once, no step
is written twice, and every run ends FINISHED in the run it started in."""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ftcl.spec import REPO_ROOT
from ftcl_cli import mlflow_client, run_ftcl

pytestmark = pytest.mark.slow

BUDGET, EVERY = 12000, 500
SPEC = {
    "name": "apple_faults",
    "env": {"name": "apple_retrieval", "options": {"apple_distance": 5}},
    "algorithm": {"name": "ppo", "model": "linear_policy",
                  "options": {"lr": 0.01, "train_batch_size_per_learner": 500, "minibatch_size": 100, "num_epochs": 2}},
    "methods": [{"name": "scratch"}],
    "seeds": [0, 1],
    "budget": {"env_steps": BUDGET},
    "evaluation": {"suites": ["far"], "every_env_steps": EVERY, "episodes": 2},
    "tracking": {"dashboard": "apple_retrieval"},
    # one trial at a time, so the one worker killed is the trial between its checkpoints
    "resources": {"checkpoint_every_iterations": 6, "max_concurrent_trials": 1},
}
EVALUATION_STEPS = set(range(0, BUDGET + 1, EVERY))


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def stop_what_was_started():
    """A failed test must not leave its driver (and the Ray it started) running."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate(timeout=60)


def start(home: Path, spec_path: Path, *extra: str) -> subprocess.Popen:
    """`ftcl run` in its own process group (as a terminal's foreground job would be)."""
    env = {**os.environ, "FTCL_HOME": str(home)}
    process = subprocess.Popen([sys.executable, "-m", "ftcl.cli", "run", str(spec_path), *extra], cwd=REPO_ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    STARTED.append(process)
    return process


def wait_for_checkpoint(home: Path, process: subprocess.Popen, index: int = 1, timeout: float = 300) -> None:
    """Until a trial has written its checkpoint number `index`, and then for 2.5 of its iterations
    (timed from its own checkpoint spacing, so a loaded machine waits longer): the fault falls between
    two checkpoints, and the restored trial replays steps that the first attempt had reported."""
    every = SPEC["resources"]["checkpoint_every_iterations"]
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        for checkpoint in home.glob(f"ray_results/apple_faults_*/finetune/*/checkpoint_{index:06d}"):
            previous = checkpoint.with_name(f"checkpoint_{index - 1:06d}")
            spacing = checkpoint.stat().st_mtime - previous.stat().st_mtime if previous.exists() else 5.0
            time.sleep(max(spacing / every, 0.1) * 2.5)
            return
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint {index} before the deadline; stderr: {process.stderr.read()[-3000:]}")


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc: this suite runs on Linux)."""
    children = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children[parent].append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def trial_workers(driver: int) -> list[int]:
    """PIDs of the driver's Ray processes that run a trial (Ray titles them `ray::…Trainable…`)."""
    found = []
    for pid in descendants(driver):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::") and "Trainable" in title:
            found.append(pid)
    return found


def count_metrics(home: Path) -> dict:
    """Per run: status, and (key, step) -> how many times MLflow holds it."""
    client = mlflow_client(home)
    experiment = client.get_experiment_by_name("apple_faults")
    counted = {}
    for run in client.search_runs([experiment.experiment_id]):
        counts = collections.Counter()
        for key in run.data.metrics:
            counts.update((key, point.step) for point in client.get_metric_history(run.info.run_id, key))
        counted[run.data.tags["ftcl.trial"]] = {"status": run.info.status, "counts": counts}
    return counted


def assert_exactly_once(home: Path) -> None:
    runs = count_metrics(home)
    assert sorted(runs) == ["scratch__seed0", "scratch__seed1"], "one MLflow run per trial, continued after faults"
    for trial, run in runs.items():
        doubled = {pair: n for pair, n in run["counts"].items() if n > 1}
        evaluated = {step for (key, step) in run["counts"] if key == "evaluation/far/success"}
        assert not doubled, f"{trial}: {len(doubled)} (key, step) pairs written more than once: {list(doubled)[:5]}"
        assert evaluated == EVALUATION_STEPS, f"{trial}: evaluation steps missing: {sorted(EVALUATION_STEPS - evaluated)}"
        assert run["status"] == "FINISHED", f"{trial}: run ended {run['status']}"


@pytest.fixture()
def spec_path(tmp_path) -> Path:
    path = tmp_path / "apple_faults.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def test_a_killed_trial_worker_is_restarted_from_its_checkpoint(tmp_path, spec_path):
    home = tmp_path / "home"
    process = start(home, spec_path)
    wait_for_checkpoint(home, process)
    workers = trial_workers(process.pid)
    assert workers, "found no trial worker process to kill"
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-4000:]
    assert_exactly_once(home)


def test_driver_interrupted_then_resumed(tmp_path, spec_path):
    home = tmp_path / "home"
    process = start(home, spec_path)
    wait_for_checkpoint(home, process)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal reaches the whole foreground group
    try:
        _, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # still shutting down: what a second Ctrl-C or `kill -9` does
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-3000:]
    advice = [line for line in stderr.splitlines() if "--resume" in line]
    assert advice and advice[-1].rstrip().endswith("--resume"), stderr[-3000:]
    runs = count_metrics(home)
    assert {run["status"] for run in runs.values()} <= {"KILLED", "FINISHED"}, "no run may be left RUNNING"
    resumed = run_ftcl(home, "run", str(spec_path), "--resume", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert_exactly_once(home)


def test_driver_killed_then_resumed_with_the_same_overrides(tmp_path, spec_path):
    home = tmp_path / "home"
    process = start(home, spec_path, "--set", "seeds=[0,1]")
    wait_for_checkpoint(home, process)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and the Ray it started, with no time to tidy up
    process.communicate(timeout=60)
    time.sleep(2)
    changed = run_ftcl(home, "run", str(spec_path), "--set", "seeds=[0,1,2]", "--resume", timeout=120)
    assert changed.returncode == 2 and "seeds" in changed.stderr, changed.stderr[-2000:]
    resumed = run_ftcl(home, "run", str(spec_path), "--set", "seeds=[0,1]", "--resume", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert_exactly_once(home)
