"""`ftcl ui`: the MLflow UI on 127.0.0.1 over ftcl's store, one worker, stopped with its workers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys


TRAINING_VIEW = "workflowType=machine_learning"
"""MLflow 3.17's UI opens in its GenAI view (traces, an assistant) unless the URL or the browser's
stored choice says otherwise; whatever an experiment's `mlflow.experimentKind` tag says."""


def training_links(uri: str, port: int, limit: int = 20) -> list[tuple[str, str]]:
    """(name, URL of its runs table in the UI's model-training view) for ftcl's experiments in the
    store (tagged model training; report experiments left out), the most recently created first."""
    from mlflow.tracking import MlflowClient

    from ftcl.tracking.store import EXPERIMENT_KIND_TAG, MODEL_TRAINING, REPORTS_SUFFIX

    experiments = MlflowClient(tracking_uri=uri).search_experiments(
        filter_string=f"tags.`{EXPERIMENT_KIND_TAG}` = '{MODEL_TRAINING}'", max_results=200, order_by=["creation_time DESC"])
    return [(e.name, f"http://127.0.0.1:{port}/#/experiments/{e.experiment_id}/runs?{TRAINING_VIEW}")
            for e in experiments if not e.name.endswith(REPORTS_SUFFIX) and e.name != "Default"][:limit]


def serve_ui(tracking_uri: str | None, port: int) -> int:
    """Serve the store until Ctrl-C (or SIGTERM); ValueError for a store the UI cannot serve."""
    from ftcl.tracking.store import artifact_root, ensure_experiment, tracking_uri as resolve

    uri = resolve(tracking_uri)
    if not uri.startswith(("sqlite:///", "postgresql://", "mysql://", "mssql://")):
        raise ValueError(f"--tracking-uri {uri!r}: `ftcl ui` serves a database store: sqlite:///PATH or a database URL")
    if uri.startswith("sqlite:"):
        ensure_experiment(uri, "Default")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "ui", "--workers", "1", "--host", "127.0.0.1",
               "--port", str(port), "--backend-store-uri", uri, "--default-artifact-root", artifact_root()]
    # Its own process group: on Ctrl-C (or `kill`) the server and its workers are stopped together,
    # first gently, then (if a loaded machine keeps them busy) by SIGTERM and SIGKILL. The handlers
    # are set explicitly: a shell's background job inherits SIGINT ignored, and Python then never
    # raises KeyboardInterrupt.
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    process = subprocess.Popen(command, env=env, start_new_session=True)
    print(f"MLflow UI: http://127.0.0.1:{port}  (store {uri}; Ctrl-C to stop)", flush=True)
    for name, link in training_links(uri, port):
        print(f"  {name}: {link}", flush=True)
    try:
        return process.wait()
    except KeyboardInterrupt:
        for stop_signal, grace_seconds in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(process.pid, stop_signal)
                process.wait(timeout=grace_seconds)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        return 0
