"""Per-state log-likelihoods of π*'s actions over fine-tuning, as one small file per trial (Fig. 8).

The paper draws π*'s states of a FAR stage projected to 2-D with PCA and coloured by
log π_θ(a*|s) at several points of fine-tuning. A fine-tuning trial keeps what that figure needs in
a `StateRecord`, rewritten at every evaluation as `analysis/state_log_likelihood.npz` (under the
trial's folder and as an MLflow artifact of the trial's run, `ARTIFACT_PATH`).

File format (`FORMAT` = 1; numpy `.npz`, float32 unless said):
    format                       int, 1
    suites                       (k,) str, the suites in `evaluation.log_likelihood_suites` order
    env_steps                    (m,) int64, the env steps of the m evaluations, increasing
    <suite>/rows                 (n,) int64, the rows of π*'s data file (`pretrained.data`) used
    <suite>/xy                   (n, 2) PCA coordinates of those rows' observations
    <suite>/explained_variance   (2,) fraction of the observations' variance on each component
    <suite>/log_likelihood       (m, n) log π_θ(a*_i|s*_i) at each evaluation (row j: env_steps[j])

The PCA is fitted once on the suite's selected observations (centred, not scaled; signs fixed so
that each component's largest loading is positive), so it is the same for every trial that reads
the same π* data and does not depend on θ. Numpy only: the report reads it without torch.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = 1
FILE_NAME = "state_log_likelihood.npz"
ARTIFACT_DIR = "analysis"
ARTIFACT_PATH = f"{ARTIFACT_DIR}/{FILE_NAME}"
"""Where the record lies among a trial run's MLflow artifacts."""


def pca_2d(observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) coordinates of `observations` on their first two principal components, and the
    fraction of variance each explains (zeros where there are fewer than 2 components)."""
    x = np.asarray(observations, dtype=np.float64).reshape(len(observations), -1)
    coordinates = np.zeros((len(x), 2))
    explained = np.zeros(2)
    if len(x) == 0:
        return coordinates.astype(np.float32), explained.astype(np.float32)
    centred = x - x.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    k = min(2, len(singular))
    components = components[:k]
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    coordinates[:, :k] = centred @ components.T
    total = float(np.sum(singular**2))
    if total > 0:
        explained[:k] = singular[:k] ** 2 / total
    return coordinates.astype(np.float32), explained.astype(np.float32)


@dataclass
class SuiteStates:
    """One suite's states in a record: their data rows, 2-D coordinates and log-likelihoods."""

    rows: np.ndarray
    xy: np.ndarray
    explained_variance: np.ndarray
    log_likelihood: list[np.ndarray] = field(default_factory=list)
    """One (n,) array per evaluation."""


@dataclass
class StateRecord:
    """The per-state log-likelihoods of one trial (module doc); `add` one evaluation at a time."""

    suites: dict[str, SuiteStates]
    env_steps: list[int] = field(default_factory=list)

    @classmethod
    def start(cls, rows: dict[str, np.ndarray], observations: dict[str, np.ndarray]) -> "StateRecord":
        """A record without evaluations: suite -> data rows and their observations (PCA fitted here)."""
        suites = {}
        for suite, suite_rows in rows.items():
            xy, explained = pca_2d(observations[suite])
            suites[suite] = SuiteStates(np.asarray(suite_rows, dtype=np.int64), xy, explained)
        return cls(suites)

    def add(self, env_steps: int, values: dict[str, np.ndarray]) -> None:
        """Append one evaluation (suite -> (n,) log-likelihoods); evaluations at or after
        `env_steps` already recorded (a resumed trial repeats them) are replaced."""
        keep = [index for index, step in enumerate(self.env_steps) if step < env_steps]
        self.env_steps = [self.env_steps[index] for index in keep] + [int(env_steps)]
        for suite, states in self.suites.items():
            kept = [states.log_likelihood[index] for index in keep]
            value = np.asarray(values[suite], dtype=np.float32)
            if value.shape != (len(states.rows),):
                raise ValueError(f"state record: suite {suite!r} has {len(states.rows)} states, got {value.shape}")
            states.log_likelihood = kept + [value]

    def matrix(self, suite: str) -> np.ndarray:
        """(evaluations × states) log-likelihoods of a suite."""
        states = self.suites[suite]
        return np.stack(states.log_likelihood) if states.log_likelihood else np.zeros((0, len(states.rows)), np.float32)

    def save(self, path: str | Path) -> Path:
        """Write the record (module doc's format), atomically: a reader never sees half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "format": np.asarray(FORMAT),
            "suites": np.asarray(list(self.suites), dtype=str),
            "env_steps": np.asarray(self.env_steps, dtype=np.int64),
        }
        for suite, states in self.suites.items():
            arrays[f"{suite}/rows"] = states.rows
            arrays[f"{suite}/xy"] = states.xy
            arrays[f"{suite}/explained_variance"] = states.explained_variance
            arrays[f"{suite}/log_likelihood"] = self.matrix(suite)
        partial = path.with_name(path.name + ".partial")
        with open(partial, "wb") as f:
            np.savez(f, **arrays)
        os.replace(partial, path)
        return path


def read_state_record(path: str | Path) -> StateRecord:
    """Read a record written by `StateRecord.save`; ValueError naming what is wrong with it."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            if "format" not in data.files or int(data["format"]) != FORMAT:
                raise ValueError(f"not a state record of format {FORMAT}")
            env_steps = [int(step) for step in data["env_steps"]]
            suites = {}
            for suite in [str(name) for name in data["suites"]]:
                matrix = data[f"{suite}/log_likelihood"]
                rows = data[f"{suite}/rows"]
                if matrix.shape != (len(env_steps), len(rows)):
                    raise ValueError(f"{suite}/log_likelihood has shape {matrix.shape}, expected "
                                     f"({len(env_steps)}, {len(rows)})")
                suites[suite] = SuiteStates(rows, data[f"{suite}/xy"], data[f"{suite}/explained_variance"],
                                            list(matrix))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"state record {str(path)!r} is unreadable: {error}") from None
    return StateRecord(suites, env_steps)
