"""A real multi-node Ray cluster and a real MLflow tracking server on this machine, for the tests.

`LocalCluster` starts a head (no CPUs: trials go to the workers; its dashboard takes `ray job
submit`) and N worker nodes of one CPU each, each with its own custom resource `worker<i>`, every
port a free one. Every address given is 127.0.0.1; Ray 2.60's `ray start` maps a loopback
`--node-ip-address` to the machine's own address (`services.resolve_ip_for_localhost`), so the
nodes register under that one address. Each node runs `ray start --block` in its own
process group, so the test ends exactly the processes it started (`stop_worker` kills one node's
group: a node loss). `TrackingServer` is `mlflow server` on 127.0.0.1 with a SQLite backend and
proxied artifacts (`--serve-artifacts`): what a driver on another machine would log to; with
`basic_auth`, behind MLflow's basic-auth app, as a shared cluster's server would be.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ftcl_cli import free_port

VENV_BIN = str(Path(sys.executable).parent)


def _environment() -> dict[str, str]:
    return {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}


def _wait_http(url: str, process: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:  # up, but wants a token: ready
            return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{url}: the process ended: {log.read_text()[-3000:]}")
            time.sleep(1)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s: {log.read_text()[-3000:]}")


def _stop_group(process: subprocess.Popen, sig: int = signal.SIGTERM, wait_s: float = 60) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _agent_ports() -> list[str]:
    """Every port a node would otherwise take at a fixed default gets a free one (several nodes share
    the machine, and another Ray may run beside the test)."""
    return [f"--{name}={free_port()}" for name in (
        "node-manager-port", "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
        "runtime-env-agent-port", "metrics-export-port")]


class LocalCluster:
    """Head + `workers` one-CPU nodes (module doc)."""

    def __init__(self, folder: Path, workers: int = 2):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.env = {**_environment(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.head = self._start("head", ["--head", f"--port={self.gcs_port}", f"--dashboard-port={self.dashboard_port}",
                                         "--num-cpus=0", "--include-dashboard=true"])
        _wait_http(f"{self.dashboard}/api/version", self.head, self.folder / "head.log")
        # Each worker node gets its own temp folder, as on its own machine: nodes that share one
        # session folder take the same socket names when they start together, and each node's
        # runtime-env agent deletes and re-extracts a job's working_dir there while the others run
        # from it. Short paths: a Unix socket's path has at most 107 characters.
        self.temp_dirs = [Path(tempfile.mkdtemp(prefix="ray", dir="/tmp")) for _ in range(workers)]
        self.workers = []
        for i in range(workers):
            self.workers.append(self._start(f"node_{i}", [f"--address={self.address}", "--num-cpus=1",
                                                          f"--temp-dir={self.temp_dirs[i]}",
                                                          f"--resources={json.dumps({f'worker{i}': 1})}"]))
            self._wait_for_nodes(2 + i)

    def _start(self, name: str, arguments: list[str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "w")
        return subprocess.Popen(
            [f"{VENV_BIN}/ray", "start", "--node-ip-address=127.0.0.1", *arguments, *_agent_ports(), "--block"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def alive_nodes(self) -> list[dict]:
        """The cluster's nodes as its dashboard lists them (alive ones)."""
        request = urllib.request.Request(f"{self.dashboard}/nodes?view=summary",
                                         headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            summary = json.load(answer)["data"]["summary"]
        return [node for node in summary if node.get("raylet", {}).get("state") == "ALIVE"]

    def node_ids(self) -> dict[str, str]:
        """"head" or the worker's custom resource (`worker<i>`) -> that node's id."""
        ids = {}
        for node in self.alive_nodes():
            raylet = node["raylet"]
            names = ["head"] if raylet.get("isHeadNode") else [key for key in raylet.get("resourcesTotal", {})
                                                               if key.startswith("worker")]
            ids[names[0]] = raylet["nodeId"]
        return ids

    def node_addresses(self) -> set[str]:
        return {node["raylet"]["nodeManagerAddress"] for node in self.alive_nodes()}

    def _wait_for_nodes(self, count: int, seconds: float = 120) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                if len(self.alive_nodes()) >= count:
                    return
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(1)
        logs = "\n".join(path.read_text()[-1500:] for path in sorted(self.folder.glob("*.log")))
        raise RuntimeError(f"{count} Ray nodes did not come up within {seconds:.0f} s:\n{logs}")

    def stop_worker(self, index: int) -> None:
        """A node loss: SIGKILL the worker node's whole process group (its raylet and its workers)."""
        _stop_group(self.workers[index], signal.SIGKILL)

    def stop(self) -> None:
        for process in [*self.workers, self.head]:
            _stop_group(process)
        for folder in self.temp_dirs:
            shutil.rmtree(folder, ignore_errors=True)


class TrackingServer:
    """`mlflow server` on 127.0.0.1 with a SQLite backend and proxied artifacts (module doc). With
    `basic_auth`, MLflow's basic-auth app: every request needs a user's password; new users may read
    everything and manage what they create; `admin` holds `admin_password`."""

    def __init__(self, folder: Path, basic_auth: bool = False):
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.database = folder / "mlflow.db"
        log = folder / "mlflow_server.log"
        env = {**_environment(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        auth = []
        if basic_auth:
            self.admin_password = secrets.token_hex(12)
            config = folder / "basic_auth.ini"
            config.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{folder / 'users.db'}\n"
                              f"admin_username = admin\nadmin_password = {self.admin_password}\n"
                              "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
            env.update(MLFLOW_AUTH_CONFIG_PATH=str(config), MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16))
            auth = ["--app-name", "basic-auth"]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", *auth, "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{self.database}", "--serve-artifacts",
             "--artifacts-destination", str(folder / "artifacts")],
            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        _wait_http(f"{self.uri}/health", self.process, log)

    def add_user(self, name: str, password: str) -> None:
        """A new user of the basic-auth app, made by the admin through the REST API."""
        request = urllib.request.Request(
            f"{self.uri}/api/2.0/mlflow/users/create", method="POST",
            data=json.dumps({"username": name, "password": password}).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Basic " + base64.b64encode(
                f"admin:{self.admin_password}".encode()).decode()})
        urllib.request.urlopen(request, timeout=30).close()

    def stop(self) -> None:
        _stop_group(self.process, signal.SIGINT, wait_s=30)
