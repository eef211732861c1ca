"""Episodic memory for SAC: an EpisodeReplayBuffer with a protected partition of π* data.

`ProtectedMemoryEpisodeReplayBuffer` keeps two stores:
  * the online FIFO — RLlib's own `EpisodeReplayBuffer` logic (this class's base), with
    capacity `capacity − protected_capacity`, evicting its oldest episodes as usual;
  * the protected partition — a second `EpisodeReplayBuffer` filled once, before fine-tuning,
    with π*'s transitions (`add_protected_transitions`), which nothing ever evicts.
`sample(num_items=n, sample_episodes=True, ...)` draws k items from the protected partition
and n−k from the online FIFO, k ~ Binomial(n, P/(P+N)) for P protected and N online
transitions — i.e. uniform over the whole buffer as in the paper — or Binomial(n, f) with a
fixed `protected_fraction` f (`ftcl.retention.memory.split_sample_counts`). Each part is
sampled uniformly (with n-step returns) by RLlib's own code.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.replay_buffers.episode_replay_buffer import EpisodeReplayBuffer

from ftcl.retention.memory import split_sample_counts


def transitions_to_episodes(
    data: Mapping[str, np.ndarray],
    observation_space: Any = None,
    action_space: Any = None,
) -> list[SingleAgentEpisode]:
    """Cut consecutive transitions into episodes (a new one starts after a done flag or where
    next_obs[i] != obs[i+1]), so n-step sampling never crosses an episode boundary."""
    observations, next_observations = np.asarray(data["obs"]), np.asarray(data["next_obs"])
    terminateds, truncateds = np.asarray(data["terminateds"], bool), np.asarray(data["truncateds"], bool)
    count = len(observations)
    episodes = []
    start = 0
    for index in range(count):
        last = index == count - 1
        boundary = (
            last
            or terminateds[index]
            or truncateds[index]
            or not np.array_equal(next_observations[index], observations[index + 1])
        )
        if not boundary:
            continue
        stop = index + 1
        episode = SingleAgentEpisode(
            observations=list(observations[start:stop]) + [next_observations[index]],
            actions=list(np.asarray(data["actions"])[start:stop]),
            rewards=list(np.asarray(data["rewards"], dtype=np.float32)[start:stop]),
            terminated=bool(terminateds[index]),
            truncated=bool(truncateds[index]),
            observation_space=observation_space,
            action_space=action_space,
            len_lookback_buffer=0,
        )
        episodes.append(episode.to_numpy())
        start = stop
    return episodes


class ProtectedMemoryEpisodeReplayBuffer(EpisodeReplayBuffer):
    """FIFO episode replay plus a protected partition of π* transitions (module docstring)."""

    def __init__(
        self,
        capacity: int = 10_000,
        *,
        protected_capacity: int = 0,
        protected_fraction: float | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not 0 < protected_capacity < capacity:
            raise ValueError(
                f"protected_capacity must be in (0, capacity={capacity}); got {protected_capacity}"
            )
        super().__init__(capacity=capacity - protected_capacity, **kwargs)
        self.total_capacity = capacity
        self.protected_capacity = protected_capacity
        self.protected_fraction = protected_fraction
        self.protected = EpisodeReplayBuffer(capacity=protected_capacity, **kwargs)
        self.rng = np.random.default_rng(seed)
        self.protected.rng = np.random.default_rng(None if seed is None else seed + 1)
        self._last_protected_count = 0

    def add_protected_transitions(
        self, data: Mapping[str, np.ndarray], observation_space: Any = None, action_space: Any = None
    ) -> int:
        """Fill the protected partition with the first `protected_capacity` transitions; returns how many."""
        if self.protected.get_num_timesteps():
            raise RuntimeError("the protected partition is already filled")
        count = min(len(data["obs"]), self.protected_capacity)
        head = {key: np.asarray(value)[:count] for key, value in data.items()}
        self.protected.add(transitions_to_episodes(head, observation_space, action_space))
        return self.protected.get_num_timesteps()

    @property
    def num_protected_timesteps(self) -> int:
        return self.protected.get_num_timesteps()

    def __len__(self) -> int:
        return super().__len__() + len(self.protected)

    def sample(self, num_items: int | None = None, *, batch_size_B: int | None = None, **kwargs: Any):
        """n items: Binomial share from the protected partition, the rest from the online FIFO."""
        if not kwargs.get("sample_episodes", False):
            raise NotImplementedError("ProtectedMemoryEpisodeReplayBuffer samples episodes only (sample_episodes=True)")
        total = num_items or batch_size_B or self.batch_size_B
        from_protected, from_online = split_sample_counts(
            total,
            self.protected.get_num_timesteps(),
            self.get_num_timesteps(),
            self.rng,
            self.protected_fraction,
        )
        self._last_protected_count = from_protected
        self.metrics.log_value("protected_items_per_sample", from_protected, window=1)
        self.metrics.log_value("protected_timesteps", self.protected.get_num_timesteps(), window=1)
        sampled: list[SingleAgentEpisode] = []
        if from_protected:
            sampled += self.protected.sample(num_items=from_protected, **kwargs)
        if from_online:
            sampled += super().sample(num_items=from_online, **kwargs)
        return sampled

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["protected"] = self.protected.get_state()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.protected.set_state(state["protected"])
