"""Per-episode metrics an env declares, logged by RLlib's env runners during training.

An env module may define `episode_metrics(last_info) -> {name: value}`, computed from the `info`
of an episode's last step (Montezuma: rooms visited, paper Fig. 18). `EpisodeMetrics` (an RLlib
callback) logs them as means over the episodes of each iteration; they reach MLflow as
`env_runners/ftcl/<name>` on the env-step axis.
"""
from __future__ import annotations

from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback

METRIC_PREFIX = "ftcl"


def _env_name(env_runner: Any) -> str | None:
    env = getattr(getattr(env_runner, "config", None), "env", None)
    return env.split("/", 1)[1] if isinstance(env, str) and env.startswith("ftcl/") else None


class EpisodeMetrics(RLlibCallback):
    """Logs the env's `episode_metrics` at each training episode's end (module doc)."""

    def on_episode_end(self, *, episode, env_runner=None, metrics_logger=None, **kwargs) -> None:
        from ftcl.envs.registry import ENVS

        name = _env_name(env_runner)
        if metrics_logger is None or name not in ENVS:
            return
        compute = getattr(ENVS[name]._module(), "episode_metrics", None)
        if compute is None:
            return
        infos = episode.get_infos()
        last = infos[-1] if len(infos) else {}
        for key, value in compute(last).items():
            metrics_logger.log_value((METRIC_PREFIX, key), float(value), reduce="mean")
