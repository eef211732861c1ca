"""Where ftcl keeps things: the ftcl home (MLflow store, Ray results, reports) and run provenance.

The ftcl home is `$FTCL_HOME`, else `./.ftcl` in the current working directory (the project).
MLflow: `spec.tracking.uri`, else `$MLFLOW_TRACKING_URI`, else `sqlite:///<home>/mlflow.db` with
artifacts in `<home>/mlartifacts`.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def ftcl_home() -> Path:
    return Path(os.environ.get("FTCL_HOME", Path.cwd() / ".ftcl")).resolve()


def tracking_uri(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{ftcl_home() / 'mlflow.db'}"


def artifact_root() -> str:
    return (ftcl_home() / "mlartifacts").as_uri()


def ensure_experiment(uri: str, name: str) -> str:
    """The MLflow experiment id for `name`, created with an explicit artifact location if new."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = artifact_root() if uri.startswith("sqlite:") else None
    return client.create_experiment(name, artifact_location=location)


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


def sha256_of(path: str | Path) -> str:
    """sha256 of a file, or of a directory (sorted relative paths and contents)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
