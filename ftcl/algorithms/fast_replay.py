"""A lean replay path for RetentionSAC: flat transitions, one learner call per training step.

RLlib 2.60's SAC `training_step` with `EpisodeReplayBuffer` spends most of its time outside the
networks (profile in results/throughput.md): every minibatch is 128 `SingleAgentEpisode.slice`
calls, then the learner-connector pipeline turns those 128 one-step episodes back into columns,
and every gradient step is its own `LearnerGroup.update` with a full metrics reduction.

`FlatTransitionReplay` stores transitions (obs, actions, rewards, next_obs, terminateds) in numpy
ring arrays and samples every minibatch of a training step with one fancy-indexing call; it can
hold a protected partition of π*'s transitions (episodic memory, EM) with the same mixing rule as
`ProtectedMemoryEpisodeReplayBuffer` (`ftcl.retention.memory.split_sample_counts`, per minibatch).

`flat_training_step(algo)` is RLlib's SAC/DQN `training_step` (new API stack) with the same
schedule — `calculate_rr_weights(config)` store and sample-and-train rounds, the same
`timesteps` passed to every update, target networks updated after every gradient step — but:
the sampled episodes are flattened once into the buffer; the train weight's minibatches are
sampled at once and built as tensors directly (the columns RLlib's SAC learner connector would
produce for 1-step returns: obs, actions, rewards, new_obs, terminateds, weights = 1,
n_step = 1); the learner runs them back to back (`update_on_minibatches`) and reduces its
metrics once. Supported: n_step = 1, uniform replay (± EM), a local learner (num_learners=0),
no custom learner connectors — `check_flat_replay_config` says what is not.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ray.rllib.algorithms.dqn.dqn import calculate_rr_weights
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    ALL_MODULES,
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    REPLAY_BUFFER_ADD_DATA_TIMER,
    REPLAY_BUFFER_RESULTS,
    REPLAY_BUFFER_SAMPLE_TIMER,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TD_ERROR_KEY,
    TIMERS,
)

from ftcl.algorithms.stage_bootstrap import STAGE_DONE_TERMINALS_METRIC, transition_terminals
from ftcl.retention.memory import split_sample_counts

FLAT_KEYS = ("obs", "actions", "rewards", "next_obs", "terminateds", "stage_done_only")
"""What the flat buffer stores per transition (truncation needs no flag: it bootstraps);
`stage_done_only` marks rows made terminal only by info["stage_done"] (for the metric)."""


def episodes_to_transitions(episodes: Sequence[Any], stage_done_is_terminal: bool = False) -> dict[str, np.ndarray]:
    """Flatten RLlib `SingleAgentEpisode` chunks into transition arrays (FLAT_KEYS).

    Row t of a chunk of length L is (o_t, a_t, r_t, o_{t+1}, d_t) with d_t = True only for the
    last row of a terminated chunk, exactly what `EpisodeReplayBuffer` samples with n_step=1;
    with `stage_done_is_terminal`, d_t is `stage_bootstrap.transition_terminals` (terminated OR
    the step's info["stage_done"], never at a truncation), as the `StageDoneAsTerminal`
    learner connector builds it.
    """
    parts: dict[str, list[np.ndarray]] = {key: [] for key in FLAT_KEYS}
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


class FlatTransitionReplay:
    """Uniform FIFO replay over flat transitions, with an optional protected (EM) partition.

    `capacity` counts all transitions; with `protected_capacity` P > 0 the online FIFO holds
    capacity − P and the protected partition (filled once by `add_protected_transitions`) is
    never evicted; minibatches mix the two as `ProtectedMemoryEpisodeReplayBuffer` does.
    """

    def __init__(
        self,
        capacity: int,
        *,
        protected_capacity: int = 0,
        protected_fraction: float | None = None,
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
        self.protected_fraction = protected_fraction
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
        """Append transitions (FLAT_KEYS) to the online FIFO, overwriting the oldest when full."""
        if not transitions:
            return 0
        count = len(transitions["obs"])
        if not self.online:
            self.online = {
                key: np.zeros((self.online_capacity,) + np.shape(transitions[key])[1:], np.asarray(transitions[key]).dtype)
                for key in FLAT_KEYS
            }
        if count > self.online_capacity:  # only the newest fit
            transitions = {key: np.asarray(transitions[key])[-self.online_capacity:] for key in FLAT_KEYS}
            count = self.online_capacity
        rows = (self._online_next + np.arange(count)) % self.online_capacity
        for key in FLAT_KEYS:
            self.online[key][rows] = transitions[key]
        self._online_next = int((self._online_next + count) % self.online_capacity)
        self._online_size = min(self._online_size + count, self.online_capacity)
        return count

    def add_protected_transitions(self, data: dict[str, np.ndarray], *_: Any) -> int:
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
            [split_sample_counts(minibatch_size, num_protected, num_online, self.rng, self.protected_fraction)[0]
             for _ in range(num_minibatches)]
        ) if num_protected else np.zeros(num_minibatches, dtype=np.int64)
        self.last_protected_counts = counts
        if not num_protected:
            rows = self.rng.integers(num_online, size=num_minibatches * minibatch_size)
            return {key: self.online[key][rows] for key in FLAT_KEYS}
        out = {key: [] for key in FLAT_KEYS}
        for from_protected in counts:
            protected_rows = self.rng.integers(num_protected, size=int(from_protected))
            online_rows = self.rng.integers(max(num_online, 1), size=minibatch_size - int(from_protected))
            for key in FLAT_KEYS:
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


def update_on_minibatches(
    learner: Any,
    batch: dict[str, torch.Tensor],
    num_minibatches: int,
    timesteps: dict[str, Any],
) -> dict[str, Any]:
    """`num_minibatches` consecutive `learner.update` calls on equal slices of `batch`.

    Each call is a full RLlib update (before/after_gradient_based_update, so target networks and
    retention schedules advance per gradient step); only the last reduces the metrics.
    """
    size = len(batch[Columns.OBS]) // num_minibatches
    results: dict[str, Any] = {}
    for index in range(num_minibatches):
        minibatch = SampleBatch({key: value[index * size:(index + 1) * size] for key, value in batch.items()})
        results = learner.update(
            batch=MultiAgentBatch({DEFAULT_MODULE_ID: minibatch}, env_steps=size),
            timesteps=timesteps,
            _no_metrics_reduce=index < num_minibatches - 1,
        )
    for module_results in results.values():
        if isinstance(module_results, dict):
            module_results.pop(TD_ERROR_KEY, None)  # per-row TD errors: only priorities need them
    return results


def check_flat_replay_config(config: Any) -> None:
    """Raise ValueError naming the setting that the flat replay path does not support."""
    problems = []
    if int(config.n_step if isinstance(config.n_step, int) else -1) != 1:
        problems.append(f"n_step={config.n_step!r} (needs 1)")
    if config.num_learners != 0:
        problems.append(f"num_learners={config.num_learners} (needs 0: a local learner)")
    if config.replay_buffer_config.get("type") not in ("EpisodeReplayBuffer", FlatTransitionReplay.__name__):
        problems.append(f"replay_buffer_config type {config.replay_buffer_config.get('type')!r} (needs uniform replay)")
    if config._learner_connector is not None:
        problems.append("a custom learner connector (the flat path builds the batch itself)")
    if config.is_multi_agent:
        problems.append("multi-agent")
    if problems:
        raise ValueError("flat_replay=True does not support: " + "; ".join(problems))


def flat_training_step(algo: Any) -> None:
    """RLlib SAC's new-stack `training_step` on a `FlatTransitionReplay` (module docstring)."""
    config = algo.config
    buffer: FlatTransitionReplay = algo.local_replay_buffer
    store_weight, train_weight = calculate_rr_weights(config)
    for _ in range(store_weight):
        with algo.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, env_runner_results = synchronous_parallel_sample(
                worker_set=algo.env_runner_group,
                concat=True,
                sample_timeout_s=config.sample_timeout_s,
                _uses_new_env_runners=True,
                _return_metrics=True,
            )
        algo.metrics.aggregate(env_runner_results, key=ENV_RUNNER_RESULTS)
        with algo.metrics.log_time((TIMERS, REPLAY_BUFFER_ADD_DATA_TIMER)):
            buffer.add(episodes)
    env_steps = algo.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
    if env_steps < config.num_steps_sampled_before_learning_starts or len(buffer) == 0:
        return
    minibatch_size = config.total_train_batch_size
    with algo.metrics.log_time((TIMERS, REPLAY_BUFFER_SAMPLE_TIMER)):
        rows = buffer.sample_rows(train_weight, minibatch_size)
        batch = rows_to_train_batch(rows)
    algo.metrics.log_value((REPLAY_BUFFER_RESULTS, "num_env_steps_stored"), buffer.get_num_timesteps(), window=1)
    if buffer.stage_done_is_terminal:  # as the StageDoneAsTerminal connector counts: per sampled row
        algo.metrics.log_value(
            (LEARNER_RESULTS, DEFAULT_MODULE_ID, STAGE_DONE_TERMINALS_METRIC),
            int(rows["stage_done_only"].sum()), reduce="lifetime_sum",
        )
    if buffer.num_protected_timesteps:
        algo.metrics.log_value(
            (REPLAY_BUFFER_RESULTS, "protected_items_per_sample"), float(buffer.last_protected_counts.mean()), window=1
        )
    timesteps = {
        NUM_ENV_STEPS_SAMPLED_LIFETIME: env_steps,
        NUM_AGENT_STEPS_SAMPLED_LIFETIME: algo.metrics.peek(
            (ENV_RUNNER_RESULTS, NUM_AGENT_STEPS_SAMPLED_LIFETIME), default={}
        ),
    }
    with algo.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
        outcome = algo.learner_group.foreach_learner(
            lambda learner: update_on_minibatches(learner, batch, train_weight, timesteps)
        )
        learner_results = []
        for result in outcome:
            if not result.ok:
                raise RuntimeError(f"flat-replay learner update failed: {result.get()}")
            learner_results.append(result.get())
        algo.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
    with algo.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
        modules_to_update = set(learner_results[0].keys()) - {ALL_MODULES}
        algo.env_runner_group.sync_weights(
            from_worker_or_learner_group=algo.learner_group,
            policies=modules_to_update,
            global_vars=None,
            inference_only=True,
        )
