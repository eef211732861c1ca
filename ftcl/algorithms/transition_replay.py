"""RetentionSAC's replay: flat transitions in numpy rings, an optional protected partition (EM).

Stored per transition: (o_t, a_t, r_t, o_{t+1}, d_t) and whether d_t was set only by a stage
boundary. Minibatches are drawn uniformly with one fancy-indexing call per training step (the
reason this path exists: RLlib 2.60's `EpisodeReplayBuffer` slices 128 one-step episodes per
minibatch and rebuilds the columns through the learner connector; results/throughput.md).

No bootstrapping at stage boundaries (paper §2.3). RoboticSequence keeps the episode running
when an intermediate stage is solved (`terminated=False`, the next stage starts), yet the paper
tells SAC that state is terminal, so the critic target of such a transition is

    y = r                                   (stage_done)
    y = r + γ · (1 − d) · V̄(s')             (otherwise, d = terminated)

RLlib's SAC loss computes y = r + γ · (1 − TERMINATEDS) · V̄(s'), so it suffices that the stored
d is terminated OR info["stage_done"]. An RLlib episode stores infos aligned with observations:
the info returned by the step (s_t, a_t) → s_{t+1} is `infos[t + 1]`. A step reported as
truncated is never made terminal by `stage_done` (truncation asks to bootstrap). n-step returns
would sum rewards across a boundary, hence RetentionSAC needs n_step = 1.

EM (`ftcl.retention.em`): with `protected_capacity` P > 0 the online FIFO holds capacity − P and
the protected partition, filled once with π*'s transitions, is never evicted; each minibatch takes
Binomial(B, share) rows from it (`split_sample_counts`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from ftcl.retention.em import split_sample_counts

STAGE_DONE_INFO_KEY = "stage_done"
"""The info key RoboticSequence sets on a step that ends a stage (success or time-out)."""
STAGE_DONE_TERMINALS_METRIC = "num_stage_done_terminals_lifetime"
"""Learner metric: sampled transitions that were made terminal only by `stage_done`."""

STORED_KEYS = ("obs", "actions", "rewards", "next_obs", "terminateds", "stage_done_only")
"""What the buffer stores per transition (truncation needs no flag: it bootstraps);
`stage_done_only` marks rows made terminal only by info["stage_done"] (for the metric)."""


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


def episodes_to_transitions(episodes: Sequence[Any], stage_done_is_terminal: bool = False) -> dict[str, np.ndarray]:
    """Flatten RLlib `SingleAgentEpisode` chunks into transition arrays (STORED_KEYS).

    Row t of a chunk of length L is (o_t, a_t, r_t, o_{t+1}, d_t) with d_t = True only for the
    last row of a terminated chunk, exactly what `EpisodeReplayBuffer` samples with n_step=1;
    with `stage_done_is_terminal`, d_t is `transition_terminals` (terminated OR the step's
    info["stage_done"], never at a truncation).
    """
    parts: dict[str, list[np.ndarray]] = {key: [] for key in STORED_KEYS}
    for episode in episodes:
        length = len(episode)
        if length == 0:
            continue
        observations = np.asarray(episode.get_observations(slice(0, length + 1)))
        parts["obs"].append(observations[:-1])
        parts["next_obs"].append(observations[1:])
        parts["actions"].append(np.asarray(episode.get_actions(slice(0, length))))
        parts["rewards"].append(np.asarray(episode.get_rewards(slice(0, length)), dtype=np.float32))
        terminateds = np.zeros(length, dtype=bool)
        terminateds[-1] = bool(episode.is_terminated)
        stage_done_only = np.zeros(length, dtype=bool)
        if stage_done_is_terminal:
            with_stage_done = np.asarray(transition_terminals(episode), dtype=bool)
            stage_done_only = with_stage_done & ~terminateds
            terminateds = with_stage_done
        parts["terminateds"].append(terminateds)
        parts["stage_done_only"].append(stage_done_only)
    if not parts["obs"]:
        return {}
    return {key: np.concatenate(values) for key, values in parts.items()}


class TransitionReplay:
    """Uniform FIFO replay over flat transitions, with an optional protected (EM) partition.

    `capacity` counts all transitions; with `protected_capacity` P > 0 the online FIFO holds
    capacity − P and the protected partition (filled once by `add_protected_transitions`) is
    never evicted; minibatches mix the two by `split_sample_counts` (module docstring).
    """

    def __init__(
        self,
        capacity: int,
        *,
        protected_capacity: int = 0,
        protected_share: float | None = None,
        seed: int | None = None,
        stage_done_is_terminal: bool = False,
    ) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive; got {capacity}")
        if not 0 <= protected_capacity < capacity:
            raise ValueError(f"protected_capacity must be in [0, capacity={capacity}); got {protected_capacity}")
        self.capacity = capacity
        self.protected_capacity = protected_capacity
        self.online_capacity = capacity - protected_capacity
        self.protected_share = protected_share
        self.stage_done_is_terminal = stage_done_is_terminal
        self.rng = np.random.default_rng(seed)
        self.online: dict[str, np.ndarray] = {}
        self.protected: dict[str, np.ndarray] = {}
        self._online_size = 0
        self._online_next = 0
        self.last_protected_counts = np.zeros(0, dtype=np.int64)

    # ---------------------------------------------------------------- sizes
    @property
    def num_online(self) -> int:
        return self._online_size

    @property
    def num_protected_timesteps(self) -> int:
        return len(self.protected["obs"]) if self.protected else 0

    def get_num_timesteps(self) -> int:
        """Online transitions stored (as `EpisodeReplayBuffer.get_num_timesteps`)."""
        return self._online_size

    def __len__(self) -> int:
        return self._online_size + self.num_protected_timesteps

    # ---------------------------------------------------------------- adding
    def add(self, episodes: Sequence[Any]) -> int:
        """Store the transitions of sampled episode chunks; returns how many were added."""
        return self.add_transitions(episodes_to_transitions(episodes, self.stage_done_is_terminal))

    def add_transitions(self, transitions: dict[str, np.ndarray]) -> int:
        """Append transitions (STORED_KEYS) to the online FIFO, overwriting the oldest when full."""
        if not transitions:
            return 0
        count = len(transitions["obs"])
        if not self.online:
            self.online = {
                key: np.zeros((self.online_capacity,) + np.shape(transitions[key])[1:], np.asarray(transitions[key]).dtype)
                for key in STORED_KEYS
            }
        if count > self.online_capacity:  # only the newest fit
            transitions = {key: np.asarray(transitions[key])[-self.online_capacity:] for key in STORED_KEYS}
            count = self.online_capacity
        rows = (self._online_next + np.arange(count)) % self.online_capacity
        for key in STORED_KEYS:
            self.online[key][rows] = transitions[key]
        self._online_next = int((self._online_next + count) % self.online_capacity)
        self._online_size = min(self._online_size + count, self.online_capacity)
        return count

    def add_protected_transitions(self, data: dict[str, np.ndarray]) -> int:
        """Fill the protected partition with the first `protected_capacity` transitions of π*'s data."""
        if self.protected_capacity == 0:
            raise RuntimeError("this buffer has no protected partition (protected_capacity=0)")
        if self.protected:
            raise RuntimeError("the protected partition is already filled")
        count = min(len(data["obs"]), self.protected_capacity)
        self.protected = {
            "obs": np.asarray(data["obs"][:count], dtype=np.float32),
            "actions": np.asarray(data["actions"][:count], dtype=np.float32),
            "rewards": np.asarray(data["rewards"][:count], dtype=np.float32),
            "next_obs": np.asarray(data["next_obs"][:count], dtype=np.float32),
            "terminateds": np.asarray(data["terminateds"][:count], dtype=bool),
            "stage_done_only": np.zeros(count, dtype=bool),
        }
        return count

    # ---------------------------------------------------------------- sampling
    def sample_rows(self, num_minibatches: int, minibatch_size: int) -> dict[str, np.ndarray]:
        """`num_minibatches` uniform minibatches, stacked: arrays of shape (M·B, ...).

        Each minibatch takes Binomial(B, share) rows from the protected partition (share as in
        `split_sample_counts`) and the rest from the online FIFO; protected rows come first.
        """
        num_protected, num_online = self.num_protected_timesteps, self._online_size
        counts = np.array(
            [split_sample_counts(minibatch_size, num_protected, num_online, self.rng, self.protected_share)[0]
             for _ in range(num_minibatches)]
        ) if num_protected else np.zeros(num_minibatches, dtype=np.int64)
        self.last_protected_counts = counts
        if not num_protected:
            rows = self.rng.integers(num_online, size=num_minibatches * minibatch_size)
            return {key: self.online[key][rows] for key in STORED_KEYS}
        out = {key: [] for key in STORED_KEYS}
        for from_protected in counts:
            protected_rows = self.rng.integers(num_protected, size=int(from_protected))
            online_rows = self.rng.integers(max(num_online, 1), size=minibatch_size - int(from_protected))
            for key in STORED_KEYS:
                out[key].append(self.protected[key][protected_rows])
                out[key].append(self.online[key][online_rows] if len(online_rows) else self.protected[key][:0])
        return {key: np.concatenate(values) for key, values in out.items()}

    def get_state(self) -> dict[str, Any]:
        return {
            "online": self.online, "protected": self.protected, "online_size": self._online_size,
            "online_next": self._online_next, "rng": self.rng.bit_generator.state,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.online, self.protected = state["online"], state["protected"]
        self._online_size, self._online_next = int(state["online_size"]), int(state["online_next"])
        self.rng.bit_generator.state = state["rng"]


def rows_to_train_batch(rows: dict[str, np.ndarray], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The train-batch columns RLlib's SAC learner connector builds for 1-step returns."""
    count = len(rows["obs"])
    return {
        Columns.OBS: torch.as_tensor(rows["obs"], dtype=torch.float32, device=device),
        Columns.ACTIONS: torch.as_tensor(rows["actions"], device=device),
        Columns.REWARDS: torch.as_tensor(rows["rewards"], dtype=torch.float32, device=device),
        Columns.NEXT_OBS: torch.as_tensor(rows["next_obs"], dtype=torch.float32, device=device),
        Columns.TERMINATEDS: torch.as_tensor(rows["terminateds"], dtype=torch.bool, device=device),
        "weights": torch.ones(count, dtype=torch.float32, device=device),
        "n_step": torch.ones(count, dtype=torch.int64, device=device),
    }


