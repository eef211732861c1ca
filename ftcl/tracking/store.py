"""Where ftcl keeps things: the ftcl home (MLflow store, Ray results, reports) and run provenance.

The ftcl home is `$FTCL_HOME`, else `./.ftcl` in the current working directory (the project).
MLflow: `spec.tracking.uri`, else `$MLFLOW_TRACKING_URI`, else `sqlite:///<home>/mlflow.db` with
artifacts in `<home>/mlartifacts`.
"""
from __future__ import annotations

import functools
import importlib.metadata
import os
import subprocess
from pathlib import Path

from ftcl.data.integrity import sha256_of  # noqa: F401  (callers read it from here too)

REPO_ROOT = Path(__file__).resolve().parents[2]


def ftcl_home() -> Path:
    return Path(os.environ.get("FTCL_HOME", Path.cwd() / ".ftcl")).resolve()


def tracking_uri(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{ftcl_home() / 'mlflow.db'}"


def connection_failure(host: str, port: int, timeout_s: float) -> str | None:
    """Why nothing accepts a TCP connection at host:port within `timeout_s` (None: something does).
    Checked before handing an address to a client that would retry for minutes."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as error:
        return "timed out" if isinstance(error, TimeoutError) else (error.strerror or type(error).__name__)


TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql")
TRACKING_CONNECT_TIMEOUT_S = 10.0


def check_tracking_uri(uri: str) -> None:
    """ValueError unless `uri` is an MLflow store ftcl can use: `sqlite:///PATH`, a database URL, or
    `http(s)://HOST[:PORT]` of a tracking server that accepts connections (checked with a timeout, so a
    dead server is one clear error, not a hang)."""
    from urllib.parse import urlsplit

    scheme = urlsplit(uri).scheme if "://" in uri else ""
    if scheme not in TRACKING_SCHEMES:
        raise ValueError(
            f"tracking URI {uri!r}: expected one of {', '.join(s + '://' for s in TRACKING_SCHEMES)} "
            "(e.g. sqlite:///path/to/mlflow.db or http://127.0.0.1:5000); MLflow's folder store is not supported"
        )
    if scheme == "sqlite" and not uri.startswith("sqlite:///"):
        raise ValueError(f"tracking URI {uri!r}: a SQLite store is sqlite:///RELATIVE/PATH or sqlite:////ABSOLUTE/PATH")
    if scheme in ("http", "https"):
        parts = urlsplit(uri)
        if not parts.hostname:
            raise ValueError(f"tracking URI {uri!r}: no host")
        port = parts.port or (443 if scheme == "https" else 80)
        reason = connection_failure(parts.hostname, port, TRACKING_CONNECT_TIMEOUT_S)
        if reason is not None:
            raise ValueError(f"tracking URI {uri!r}: no MLflow server reachable at {parts.hostname}:{port} "
                             f"({reason}); start one (`ftcl ui`) or fix the URI") from None
        refused = credentials_refused(uri)
        if refused is not None:
            raise ValueError(f"tracking URI {uri!r}: {refused}")


CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                        "MLFLOW_TRACKING_INSECURE_TLS")
"""How MLflow clients authenticate to a tracking server (basic auth, or a bearer token); passed on to
every trial process (`ftcl.runner.trial_environment`), which logs artifacts itself."""


def credentials_refused(uri: str) -> str | None:
    """Why the tracking server at `uri` refuses this process's credentials (`CREDENTIAL_VARIABLES`,
    as MLflow's client sends them), or None when it answers a read: a server with MLflow's basic-auth
    app answers 401 to a missing or wrong password, 403 to a user without permission."""
    import base64
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1")
    user, password, token = (os.environ.get(name) for name in CREDENTIAL_VARIABLES[:3])
    if user and password:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    elif token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        urllib.request.urlopen(request, timeout=TRACKING_CONNECT_TIMEOUT_S).close()
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            sent = f"as user {user!r}" if user and password else "with a token" if token else "without credentials"
            return (f"the tracking server refused the request {sent} (HTTP {error.code}); set MLFLOW_TRACKING_USERNAME "
                    "and MLFLOW_TRACKING_PASSWORD (MLflow's basic-auth app) or MLFLOW_TRACKING_TOKEN to an account "
                    "that may write runs")
    except OSError:
        return None  # not an answer about credentials: the clients report what is wrong
    return None


def artifact_root() -> str:
    return (ftcl_home() / "mlartifacts").as_uri()


EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
"""MLflow's experiment kind: its UI opens a model-training experiment on runs and metric charts (an
experiment without the tag opens in the GenAI view: traces, token usage)."""
REPORTS_SUFFIX = ".reports"
"""`ftcl report` logs its report runs to `<experiment>.reports`, out of the trials' runs table."""


def trial_run(client, experiment_id: str, trial_key: str, group: str):
    """The MLflow run of one trial of one `ftcl run` group (tags `ftcl.trial`, `ftcl.group`), or None."""
    runs = client.search_runs([experiment_id], max_results=1,
                              filter_string=f"tags.`ftcl.trial` = '{trial_key}' and tags.`ftcl.group` = '{group}'")
    return runs[0] if runs else None


def ensure_experiment(uri: str, name: str) -> str:
    """The MLflow experiment id for `name`, created with an explicit artifact location if new;
    tagged as a model-training experiment (`EXPERIMENT_KIND_TAG`), an older one too."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        return experiment.experiment_id
    location = artifact_root() if uri.startswith("sqlite:") else None
    return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})


@functools.cache
def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
        sha = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.cache
def package_versions() -> dict[str, str]:
    versions = {}
    for package in ("ftcl", "ray", "torch", "gymnasium", "mlflow", "metaworld", "mujoco", "ale-py", "nle"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "absent"
    return versions


