"""Log-likelihood of π*'s stored actions under the current policy (paper Fig. 8).

The paper's analysis of forgetting: on states s* that π* visited (its pre-training data), with the
actions a* that π* took there, track

    ℓ(θ) = (1/n) Σ_i log π_θ(a*_i | s*_i)

during fine-tuning. At env step 0 a fine-tuning trial is π* itself, so ℓ(θ*) is π*'s own
log-likelihood of its sampled actions; under plain fine-tuning ℓ collapses on the FAR states (e.g.
the push-wall stage) long before the agent gets there again.

Metrics per suite, at every evaluation (`log_likelihood_metrics`):
- `analysis/log_likelihood/<suite>`: the mean ℓ (dominated by the few states where π_θ moved most);
- `analysis/log_likelihood_<q>/<suite>` for q in q10, q25, median, q75, q90: quantiles over the
  suite's states, so that `analysis/log_likelihood/*` still globs the means only and
  `analysis/log_likelihood_median/*` the medians.
The per-state values themselves go to the trial's state record (`ftcl.evaluation.state_records`),
from which the report draws the paper's figure (states in 2-D by PCA, coloured by log π_θ(a*|s)).

The data are the retention file of `ftcl.data.retention_data` (keys `obs`, `actions`, ...); the
rows of a suite are those the env's `suite_state_mask` selects (RoboticSequence: the suite's stages
by the observation's one-hot; other envs: every row), capped at `MAX_ROWS_PER_SUITE` evenly spaced
rows so that evaluation stays fast.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

MAX_ROWS_PER_SUITE = 2_000
"""At most this many stored rows per suite enter ℓ (evenly spaced over the data, deterministic)."""

SQUASH_MARGIN = 1e-6
"""Actions of a tanh-squashed Gaussian are clipped to ±(1 − margin): atanh(±1) = ±∞."""

LOG_LIKELIHOOD_QUANTILES = {"q10": 0.10, "q25": 0.25, "median": 0.50, "q75": 0.75, "q90": 0.90}
"""Quantiles over a suite's states of log π_θ(a*|s*), logged as `analysis/log_likelihood_<name>/<suite>`."""


def stored_action_log_likelihoods(module: Any, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """log π_θ(a_i | s_i) of every row (float64, shape (n,)) under an RLModule's exploration
    (sampling) distribution.

    π_θ(·|s) = `module.get_exploration_action_dist_cls().from_logits(inputs)` with the inputs of
    `module.forward_exploration`: a tanh-squashed Gaussian for SAC (`multihead_sac`; actions in
    [-1, 1], clipped to ±(1 − 1e-6) first), a Categorical for discrete actions (integer actions),
    a diagonal Gaussian for PPO on Box spaces.
    """
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.distribution.torch.torch_distribution import TorchSquashedGaussian

    if len(observations) == 0:
        return np.zeros(0)
    device = next(iter(module.parameters()), torch.zeros(())).device
    dist_cls = module.get_exploration_action_dist_cls()
    actions = np.asarray(actions)
    if np.issubdtype(actions.dtype, np.integer):
        action_tensor = torch.as_tensor(actions, dtype=torch.long, device=device)
    else:
        action_tensor = torch.as_tensor(actions, dtype=torch.float32, device=device)
        if issubclass(dist_cls, TorchSquashedGaussian):
            action_tensor = action_tensor.clamp(-1.0 + SQUASH_MARGIN, 1.0 - SQUASH_MARGIN)
    with torch.no_grad():
        obs = torch.as_tensor(np.asarray(observations, dtype=np.float32), device=device)
        inputs = module.forward_exploration({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        logp = dist_cls.from_logits(inputs).logp(action_tensor)  # log π_θ(a_i|s_i), shape (n,)
    return logp.cpu().numpy().astype(np.float64)


def stored_action_log_likelihood(module: Any, observations: np.ndarray, actions: np.ndarray) -> float:
    """ℓ = mean_i log π_θ(a_i | s_i) (see `stored_action_log_likelihoods`); NaN without rows."""
    values = stored_action_log_likelihoods(module, observations, actions)
    return float(values.mean()) if len(values) else float("nan")


def log_likelihood_metrics(suite: str, values: np.ndarray) -> dict[str, float]:
    """The logged statistics of one suite's per-state log π_θ(a*|s*) (module doc: metric names).

    The mean (`analysis/log_likelihood/<suite>`) is dominated by the few states where π_θ has moved
    furthest (it reaches −1e12); the median and quantiles over states show how much of the state
    space keeps a high likelihood. Non-finite values are left out of the quantiles; no rows: NaN.
    """
    finite = values[np.isfinite(values)]
    metrics = {f"analysis/log_likelihood/{suite}": float(values.mean()) if len(values) else float("nan")}
    for name, level in LOG_LIKELIHOOD_QUANTILES.items():
        metrics[f"analysis/log_likelihood_{name}/{suite}"] = (
            float(np.quantile(finite, level)) if len(finite) else float("nan")
        )
    return metrics


def select_rows(mask: np.ndarray, max_rows: int = MAX_ROWS_PER_SUITE) -> np.ndarray:
    """Indices of the rows where `mask` holds; at most `max_rows`, evenly spaced (deterministic)."""
    rows = np.flatnonzero(mask)
    if len(rows) > max_rows:
        rows = rows[np.linspace(0, len(rows) - 1, max_rows).round().astype(int)]
    return rows


def suite_row_indices(
    data: dict[str, np.ndarray],
    env_name: str,
    options: dict[str, Any],
    suites: list[str],
    max_rows: int = MAX_ROWS_PER_SUITE,
) -> dict[str, np.ndarray]:
    """Suite -> indices (into π*'s data file) of that suite's stored rows (≤ `max_rows`, evenly
    spaced); `options` are the (validated) env options of the trial."""
    from ftcl.envs.registry import ENVS

    entry = ENVS[env_name]
    return {suite: select_rows(entry.suite_state_mask(options, suite, data["obs"]), max_rows) for suite in suites}


def suite_rows(
    data: dict[str, np.ndarray],
    env_name: str,
    options: dict[str, Any],
    suites: list[str],
    max_rows: int = MAX_ROWS_PER_SUITE,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Suite -> (observations s*, actions a*) of π*'s stored rows in that suite (≤ `max_rows`).

    A suite with no stored rows gets empty arrays (its ℓ is NaN, which tracking skips).
    """
    indices = suite_row_indices(data, env_name, options, suites, max_rows)
    return {suite: (data["obs"][rows], data["actions"][rows]) for suite, rows in indices.items()}
