"""No bootstrapping at stage boundaries: `info["stage_done"]` makes a SAC transition terminal.

RoboticSequence (paper §2.3) keeps the episode running when an intermediate stage is solved
(`terminated=False`, the next stage starts), yet the paper tells SAC that state is terminal. The
critic target of such a transition must therefore be

    y = r                                   (stage_done)
    y = r + γ · (1 − d) · V̄(s')             (otherwise, d = terminated)

RLlib's SAC loss computes y = r + γⁿ · (1 − TERMINATEDS) · V̄(s'), so it suffices that the train
batch's TERMINATEDS column is d = terminated OR stage_done. `StageDoneAsTerminal` is the learner
connector that builds TERMINATEDS that way; it sits right before RLlib's
`AddColumnsFromEpisodesToTrainBatch`, which then keeps the column as given.

Which info belongs to a transition: an RLlib episode stores infos aligned with observations, so
the info returned by the step (s_t, a_t) → s_{t+1} is `infos[t + 1]` (`infos[0]` is the reset's;
RLlib's `AddInfosFromEpisodesToTrainBatch` adds `infos[t]`, the previous step's, and is therefore
not used here). The replay buffer's 1-step samples keep [infos[t], infos[t + 1]].

A step that the env reports as truncated is never made terminal by `stage_done`: truncation is
the env's explicit request to bootstrap (RoboticSequence with `timeout_is_terminal=False` sets
`stage_done` at a time-out too, together with `truncated=True`).

n-step returns (n > 1) would sum rewards across a stage boundary and bootstrap from the next
stage, and the sampled n-step transition keeps only the infos of its two ends; hence
`RetentionSACConfig` refuses `stage_done_is_terminal=True` with `n_step != 1`.

Metric: `num_stage_done_terminals_lifetime` (per module, in the learner results) counts the
transitions that were made terminal only by `stage_done`.
"""
from __future__ import annotations

from typing import Any

from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.connectors.learner import AddColumnsFromEpisodesToTrainBatch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

STAGE_DONE_INFO_KEY = "stage_done"
"""The info key RoboticSequence sets on a step that ends a stage (success or time-out)."""

STAGE_DONE_TERMINALS_METRIC = "num_stage_done_terminals_lifetime"


def transition_terminals(episode: SingleAgentEpisode, info_key: str = STAGE_DONE_INFO_KEY) -> list[bool]:
    """d_t for each of the episode's transitions t = 0..L−1 (L = len(episode)).

    d_t = terminated (only at the last transition, if the episode terminated)
          OR (infos[t + 1][info_key] AND NOT truncated-at-t).
    """
    length = len(episode)
    if length == 0:
        return []
    step_infos = episode.get_infos(slice(1, length + 1))  # the info each step returned
    terminals = []
    for t, info in enumerate(step_infos):
        last = t == length - 1
        truncated = last and episode.is_truncated
        terminated = last and episode.is_terminated
        stage_done = bool(info.get(info_key, False)) if isinstance(info, dict) else False
        terminals.append(bool(terminated or (stage_done and not truncated)))
    return terminals


class StageDoneAsTerminal(ConnectorV2):
    """Learner connector: TERMINATEDS = terminated OR info[`info_key`] (see module doc)."""

    def __init__(
        self,
        input_observation_space: Any = None,
        input_action_space: Any = None,
        *,
        info_key: str = STAGE_DONE_INFO_KEY,
        **kwargs: Any,
    ) -> None:
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.info_key = info_key

    def __call__(
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
        if Columns.TERMINATEDS in batch:
            raise ValueError(
                "StageDoneAsTerminal builds the TERMINATEDS column, but an earlier learner connector "
                "already set it; put StageDoneAsTerminal first or set stage_done_is_terminal=False"
            )
        added: dict[str, int] = {}
        for episode in self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False):
            terminals = transition_terminals(episode, self.info_key)
            self.add_n_batch_items(
                batch,
                Columns.TERMINATEDS,
                items_to_add=terminals,
                num_items=len(episode),
                single_agent_episode=episode,
            )
            extra = sum(terminals) - int(episode.is_terminated and len(episode) > 0)
            module_id = episode.module_id or DEFAULT_MODULE_ID
            added[module_id] = added.get(module_id, 0) + extra
        if metrics is not None:
            for module_id, count in added.items():
                metrics.log_value((module_id, STAGE_DONE_TERMINALS_METRIC), count, reduce="lifetime_sum")
        return batch


def insert_stage_done_connector(pipeline: Any, info_key: str = STAGE_DONE_INFO_KEY) -> None:
    """Put `StageDoneAsTerminal` right before RLlib's `AddColumnsFromEpisodesToTrainBatch`."""
    if not any(isinstance(piece, AddColumnsFromEpisodesToTrainBatch) for piece in pipeline.connectors):
        raise ValueError(
            "stage_done_is_terminal=True needs RLlib's default learner connectors "
            "(add_default_connectors_to_learner_pipeline=True) to place StageDoneAsTerminal; "
            "add it to your own pipeline or set stage_done_is_terminal=False"
        )
    pipeline.insert_before(AddColumnsFromEpisodesToTrainBatch, StageDoneAsTerminal(info_key=info_key))
