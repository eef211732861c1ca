"""Helpers shared by the integration tests: run the real `ftcl` command, free ports, MLflow clients."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from ftcl.spec import REPO_ROOT


def run_ftcl(home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`ftcl ARGS` in a subprocess with FTCL_HOME=home, from the repo root."""
    env = {**os.environ, "FTCL_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "ftcl.cli", *args], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=timeout)


def mlflow_client(home: Path) -> MlflowClient:
    """A client on the default SQLite store of the ftcl home (explicit URI, no process globals)."""
    return MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
