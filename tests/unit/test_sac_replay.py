"""RetentionSAC's replay path and its RLlib overrides compute what RLlib computes, on fixed inputs.

* the overrides (fused finiteness check, in-place Polyak) vs RLlib's own `apply_gradients` /
  `after_gradient_based_update`: bitwise-equal parameters after updates;
* the transition-replay train batch vs what RLlib's SAC learner connector builds from the same
  sampled transitions: equal columns and equal SAC losses; stage_done rows terminal (paper §2.3);
* `update_on_minibatches` vs one `Learner.update` per minibatch: equal parameters;
* `TransitionReplay`: FIFO eviction, protected partition kept and mixed in; one gradient step
  per env step; what it refuses.
"""
from __future__ import annotations

import copy
import functools
import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np
import pytest
import ray
import torch

from ray.rllib.algorithms.sac.torch.sac_torch_learner import SACTorchLearner
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.training_data import TrainingData
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME
from ray.rllib.utils.replay_buffers.episode_replay_buffer import EpisodeReplayBuffer
from ray.rllib.utils.torch_utils import update_target_network

from ftcl.algorithms.rllib_overrides import all_finite, polyak_update_, update_on_minibatches
from ftcl.algorithms.sac import RetentionSACConfig
from ftcl.algorithms.transition_replay import (
    TransitionReplay,
    episodes_to_transitions,
    rows_to_train_batch,
    transition_terminals,
)

pytestmark = pytest.mark.slow
BATCH = 32
COLUMNS = (Columns.OBS, Columns.ACTIONS, Columns.REWARDS, Columns.NEXT_OBS, Columns.TERMINATEDS, "weights", "n_step")


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    ray.init(address="local", num_cpus=1, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield
    ray.shutdown()


def sac_config(rollout_fragment_length: int = 1):
    return (
        RetentionSACConfig()
        .environment("Pendulum-v1")
        .env_runners(num_env_runners=0, rollout_fragment_length=rollout_fragment_length)
        .rl_module(model_config={"fcnet_hiddens": [16]})
        .learners(num_learners=0)
        .training(
            train_batch_size_per_learner=BATCH,
            num_steps_sampled_before_learning_starts=0,
            replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": 2000},
            training_intensity=BATCH if rollout_fragment_length > 1 else None,
            lr=None, actor_lr=3e-3, critic_lr=3e-3, alpha_lr=3e-3,
        )
        .debugging(seed=0)
    )


@pytest.fixture(scope="module")
def algo():
    algorithm = sac_config().build_algo()
    yield algorithm
    algorithm.stop()


def sampled_one_step_episodes(algorithm, count: int = BATCH) -> list:
    buffer = EpisodeReplayBuffer(capacity=1000)
    buffer.add(algorithm.env_runner.sample(num_timesteps=200, random_actions=True))
    return buffer.sample(num_items=count, n_step=1, sample_episodes=True, gamma=0.99)


def module_parameters(learner) -> dict[str, torch.Tensor]:
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def snapshot(learner) -> dict:
    """Module weights, optimizer states and log α, copied (Learner.get_state shares tensors)."""
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    return copy.deepcopy({
        "module": module.state_dict(),
        "optimizers": {name: optimizer.state_dict() for name, optimizer in learner._named_optimizers.items()},
        "log_alpha": {mid: value.detach().clone() for mid, value in learner.curr_log_alpha.items()},
    })


def restore(learner, state: dict) -> None:
    learner.module[DEFAULT_MODULE_ID].unwrapped().load_state_dict(state["module"])
    for name, optimizer in learner._named_optimizers.items():
        optimizer.load_state_dict(copy.deepcopy(state["optimizers"][name]))
    with torch.no_grad():
        for mid, value in state["log_alpha"].items():
            learner.curr_log_alpha[mid].copy_(value)


def use_rllib_bookkeeping(learner) -> None:
    """Route this learner instance through RLlib's own apply_gradients / target update."""
    learner.apply_gradients = functools.partial(SACTorchLearner.apply_gradients, learner)
    learner.after_gradient_based_update = functools.partial(SACTorchLearner.after_gradient_based_update, learner)


# ---------------------------------------------------------------- fused checks, Polyak
def test_polyak_update_matches_rllib_bitwise():
    torch.manual_seed(0)
    main, target = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.LayerNorm(7)), torch.nn.Linear(5, 7)
    target = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.LayerNorm(7))
    reference = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.LayerNorm(7))
    reference.load_state_dict(target.state_dict())
    for _ in range(3):
        update_target_network(main_net=main, target_net=reference, tau=0.005)
        polyak_update_(main, target, 0.005)
    for (name, expected), actual in zip(reference.state_dict().items(), target.state_dict().values()):
        assert torch.equal(expected, actual), name


def test_all_finite_detects_nan_and_inf():
    gradients = [torch.ones(3, 3), torch.zeros(4)]
    assert all_finite(gradients)
    assert not all_finite(gradients + [torch.tensor([1.0, float("nan")])])
    assert not all_finite(gradients + [torch.tensor([float("inf")])])


def test_fused_learner_updates_equal_rllib_learner_updates_bitwise(algo):
    learner = algo.learner_group._learner
    batch = learner._make_batch_if_necessary(TrainingData(episodes=sampled_one_step_episodes(algo))).policy_batches
    state = snapshot(learner)
    timesteps = {NUM_ENV_STEPS_SAMPLED_LIFETIME: 500}

    def three_updates() -> dict[str, torch.Tensor]:
        restore(learner, state)
        torch.manual_seed(0)
        for _ in range(3):
            learner.update(batch=MultiAgentBatch(batch, env_steps=BATCH), timesteps=timesteps)
        return module_parameters(learner)

    fused = three_updates()
    use_rllib_bookkeeping(learner)
    try:
        reference = three_updates()
    finally:
        del learner.apply_gradients, learner.after_gradient_based_update
    assert fused.keys() == reference.keys() and any(n.startswith("target_") for n in fused)
    for name in reference:
        assert torch.equal(fused[name], reference[name]), name
    restore(learner, state)


def test_fused_learner_zeroes_non_finite_gradients_like_rllib(algo):
    learner = algo.learner_group._learner
    state = snapshot(learner)
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    results = []
    for use_rllib in (False, True):
        restore(learner, state)
        gradients = {ref: torch.full_like(p, 0.5) for ref, p in learner._params.items()}
        first = next(iter(gradients))
        gradients[first] = gradients[first].clone().fill_(float("nan"))
        if use_rllib:
            SACTorchLearner.apply_gradients(learner, gradients)
        else:
            learner.apply_gradients(gradients)
        results.append({n: p.detach().clone() for n, p in module.named_parameters()})
    for name in results[0]:
        assert torch.equal(results[0][name], results[1][name]), name
    restore(learner, state)


# ---------------------------------------------------------------- replay batch == RLlib connector batch
def test_replay_batch_equals_rllib_learner_connector_batch_and_losses(algo):
    learner = algo.learner_group._learner
    episodes = sampled_one_step_episodes(algo)
    connector_batch = learner._make_batch_if_necessary(TrainingData(episodes=episodes)).policy_batches[DEFAULT_MODULE_ID]
    flat_batch = rows_to_train_batch(episodes_to_transitions(episodes, stage_done_is_terminal=True))
    for column in COLUMNS:
        expected = torch.as_tensor(connector_batch[column])
        assert torch.equal(flat_batch[column].to(expected.dtype), expected), column

    def losses(batch) -> dict[str, float]:
        torch.manual_seed(0)
        fwd_out = learner.module.forward_train({DEFAULT_MODULE_ID: batch})
        learner.compute_losses(fwd_out=fwd_out, batch={DEFAULT_MODULE_ID: batch})
        values = {key[1]: float(value.detach()) for key, value in learner._temp_losses.items()}
        learner._temp_losses.clear()
        return values

    from_connector = losses(dict(connector_batch))
    from_flat = losses(flat_batch)
    assert set(from_connector) == {"qf_loss", "qf_twin_loss", "policy_loss", "alpha_loss"}
    assert from_flat == from_connector


def test_stage_done_rows_are_terminal_except_at_a_truncation():
    episode = SingleAgentEpisode(
        observations=[np.full(3, i, np.float32) for i in range(5)],
        actions=[np.zeros(1, np.float32)] * 4,
        rewards=[1.0, 2.0, 3.0, 4.0],
        infos=[{}, {"stage_done": False}, {"stage_done": True}, {"stage_done": False}, {"stage_done": True}],
        truncated=True,
        len_lookback_buffer=0,
    )
    rows = episodes_to_transitions([episode], stage_done_is_terminal=True)
    assert rows["terminateds"].tolist() == transition_terminals(episode) == [False, True, False, False]
    assert rows["stage_done_only"].tolist() == [False, True, False, False]
    assert episodes_to_transitions([episode])["terminateds"].tolist() == [False] * 4
    np.testing.assert_array_equal(rows["next_obs"][:, 0], [1, 2, 3, 4])


# ---------------------------------------------------------------- several updates per learner call
def test_update_on_minibatches_equals_one_update_call_per_minibatch(algo):
    learner = algo.learner_group._learner
    minibatches = [
        learner._make_batch_if_necessary(TrainingData(episodes=sampled_one_step_episodes(algo))).policy_batches[DEFAULT_MODULE_ID]
        for _ in range(3)
    ]
    stacked = {column: torch.cat([torch.as_tensor(mb[column]) for mb in minibatches]) for column in COLUMNS}
    state = snapshot(learner)
    timesteps = {NUM_ENV_STEPS_SAMPLED_LIFETIME: 700}

    restore(learner, state)
    torch.manual_seed(1)
    for minibatch in minibatches:
        learner.update(batch=MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(dict(minibatch))}, env_steps=BATCH), timesteps=timesteps)
    sequential = module_parameters(learner)

    restore(learner, state)
    torch.manual_seed(1)
    results = update_on_minibatches(learner, stacked, 3, timesteps)
    at_once = module_parameters(learner)
    for name in sequential:
        assert torch.equal(sequential[name], at_once[name]), name
    assert "qf_loss" in results[DEFAULT_MODULE_ID]
    restore(learner, state)


def test_sac_takes_one_gradient_step_per_env_step_on_transition_replay():
    algorithm = sac_config(rollout_fragment_length=8).build_algo()
    try:
        assert isinstance(algorithm.local_replay_buffer, TransitionReplay)
        result = algorithm.train()
        learner = algorithm.learner_group._learner
        (alpha_optimizer,) = [o for name, o in learner.get_optimizers_for_module(DEFAULT_MODULE_ID) if name == "alpha"]
        steps = int(next(iter(alpha_optimizer.state.values()))["step"])
        sampled = result["env_runners"]["num_env_steps_sampled_lifetime"]
        assert steps == sampled and sampled % 8 == 0
        assert np.isfinite(result["learners"][DEFAULT_MODULE_ID]["qf_loss"])
    finally:
        algorithm.stop()


def test_sac_rejects_what_its_replay_does_not_support():
    with pytest.raises(ValueError, match="n_step"):
        sac_config(rollout_fragment_length=8).training(n_step=3).validate()
    with pytest.raises(ValueError, match="num_learners"):
        sac_config().learners(num_learners=1).validate()
    with pytest.raises(ValueError, match="PrioritizedEpisodeReplayBuffer"):
        sac_config().training(replay_buffer_config={"type": "PrioritizedEpisodeReplayBuffer", "capacity": 100}).validate()


# ---------------------------------------------------------------- the buffer
def transitions(start: int, count: int) -> dict[str, np.ndarray]:
    values = np.arange(start, start + count, dtype=np.float32)
    return {
        "obs": values[:, None], "actions": values[:, None], "rewards": values, "next_obs": values[:, None] + 1,
        "terminateds": np.zeros(count, bool), "stage_done_only": np.zeros(count, bool),
    }


def test_transition_replay_is_fifo_and_keeps_the_protected_partition():
    buffer = TransitionReplay(capacity=150, protected_capacity=50, seed=0)
    protected = {key: value for key, value in transitions(-1000, 80).items() if key != "stage_done_only"}
    protected["truncateds"] = np.zeros(80, bool)
    assert buffer.add_protected_transitions(protected) == 50
    for start in range(0, 300, 60):
        buffer.add_transitions(transitions(start, 60))
    assert buffer.get_num_timesteps() == 100 and buffer.num_protected_timesteps == 50
    online = set(buffer.online["obs"][:, 0].tolist())
    assert online == set(range(200, 300))  # the newest 100
    rows = buffer.sample_rows(num_minibatches=200, minibatch_size=32)
    from_protected = float((rows["obs"][:, 0] < 0).mean())
    assert abs(from_protected - 50 / 150) < 0.03
    assert set(rows["obs"][rows["obs"][:, 0] >= 0, 0].tolist()) <= online
    plain = TransitionReplay(capacity=10, seed=0)
    plain.add_transitions(transitions(0, 25))
    assert sorted(plain.online["obs"][:, 0].tolist()) == list(range(15, 25))
