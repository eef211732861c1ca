"""Env-runner connector pipelines without per-piece timers (same connectors, same outputs).

RLlib 2.60's `ConnectorPipelineV2.__call__` opens a `MetricsLogger.log_time` context per
connector piece on every call, keyed by `to_snake_case(piece class name)` (a regex per call):
about 5.6 µs per piece, ~13 pieces per env step for PPO on CartPole (env-to-module and
module-to-env pipelines), i.e. ~70 µs of a ~0.6 ms env step. The classes here run the same
pieces in the same order with the same arguments, keep the pipeline-level timer
(`connector_pipeline_timer`) and the env-to-module episode-length values, and drop only the
per-piece timers (`<pipeline>/timers/connectors/<piece>` in the env runner's metrics).
Opt-in: `RetentionPPOConfig.throughput(per_connector_timers=False)`.
"""
from __future__ import annotations

import contextlib
from typing import Any

from ray.rllib.connectors.connector_pipeline_v2 import ConnectorPipelineV2
from ray.rllib.connectors.env_to_module.env_to_module_pipeline import EnvToModulePipeline
from ray.rllib.connectors.module_to_env.module_to_env_pipeline import ModuleToEnvPipeline
from ray.rllib.utils.metrics import CONNECTOR_PIPELINE_TIMER


class _PipelineTimerOnly(ConnectorPipelineV2):
    """`ConnectorPipelineV2.__call__` with one timer for the whole pipeline, none per piece."""

    def __call__(  # type: ignore[override]
        self,
        *,
        rl_module: Any,
        batch: dict[str, Any],
        episodes: list[Any],
        explore: bool | None = None,
        shared_data: dict | None = None,
        metrics: Any = None,
        **kwargs: Any,
    ) -> Any:
        shared_data = shared_data if shared_data is not None else {}
        timer = (
            metrics.log_time(kwargs.get("metrics_prefix_key", ()) + (CONNECTOR_PIPELINE_TIMER,))
            if metrics
            else contextlib.nullcontext()
        )
        with timer:
            for connector in self.connectors:
                batch = connector(
                    rl_module=rl_module,
                    batch=batch,
                    episodes=episodes,
                    explore=explore,
                    shared_data=shared_data,
                    metrics=metrics,
                    data=batch,  # RLlib passes the deprecated alias too
                    **kwargs,
                )
                if not isinstance(batch, dict):
                    raise ValueError(f"`data` returned by ConnectorV2 {connector} must be a dict; got {batch!r}")
        return batch


class EnvToModulePipelineTimerOnly(EnvToModulePipeline, _PipelineTimerOnly):
    """RLlib's env-to-module pipeline (episode-length values kept) without per-piece timers."""


class ModuleToEnvPipelineTimerOnly(ModuleToEnvPipeline, _PipelineTimerOnly):
    """RLlib's module-to-env pipeline without per-piece timers."""


def without_piece_timers(pipeline: Any) -> Any:
    """Switch an RLlib env-to-module / module-to-env pipeline (exact class) to its timer-only twin."""
    swaps = {EnvToModulePipeline: EnvToModulePipelineTimerOnly, ModuleToEnvPipeline: ModuleToEnvPipelineTimerOnly}
    replacement = swaps.get(type(pipeline))
    if replacement is not None:
        pipeline.__class__ = replacement
    return pipeline
