"""PPO + RND: the connector's intrinsic rewards, their normalisation and the two-stream GAE against a
reference written here; the learner's losses; retention terms reach the actor only."""
from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.evaluation.postprocessing import Postprocessing

from ftcl.algorithms.ppo_rnd import INTRINSIC_REWARDS, INTRINSIC_VALUE_TARGETS, RetentionPPORNDConfig
from ftcl.models.rnd_cnn import RNDPolicyModule

SIZE, FRAMES, ACTIONS = 36, 4, 5
OBSERVATIONS = gym.spaces.Box(0, 255, (SIZE, SIZE, FRAMES), np.uint8)
GAMMA, GAMMA_INT, LAMBDA, EXT, INT = 0.999, 0.99, 0.95, 2.0, 1.0


def _config(**training):
    options = {"gamma": GAMMA, "lambda_": LAMBDA, "gamma_int": GAMMA_INT, "ext_coef": EXT, "int_coef": INT,
               "train_batch_size_per_learner": 64, "minibatch_size": 64, "num_epochs": 1, **training}
    return (RetentionPPORNDConfig()
            .training(**options)
            .rl_module(model_config={"trunk_width": 32, "head_width": 48, "rnd_width": 16})
            .debugging(seed=0))


def _learner(config=None):
    return (config or _config()).build_learner(spaces={DEFAULT_MODULE_ID: (OBSERVATIONS, gym.spaces.Discrete(ACTIONS))})


def _episode(rng, length, terminated):
    observations = [rng.integers(0, 256, OBSERVATIONS.shape, dtype=np.uint8) for _ in range(length + 1)]
    return SingleAgentEpisode(
        observations=observations, actions=list(rng.integers(0, ACTIONS, length)),
        rewards=list(rng.choice([0.0, 1.0, 300.0], length, p=[0.7, 0.2, 0.1])), terminated=terminated,
        extra_model_outputs={Columns.ACTION_LOGP: list(np.zeros(length, np.float32)),
                             Columns.ACTION_DIST_INPUTS: list(np.zeros((length, ACTIONS), np.float32))},
        len_lookback_buffer=0).to_numpy()


def _reference_gae(values, rewards, gamma, lam, terminated):
    """GAE over one episode chunk of T steps: values has T + 1 entries (the last: V of the final
    observation); a termination drops the bootstrap."""
    steps = len(rewards)
    next_values = np.append(values[1:steps], 0.0 if terminated else values[steps])
    deltas = rewards + gamma * next_values - values[:steps]
    advantages, running = np.zeros(steps), 0.0
    for t in reversed(range(steps)):
        running = deltas[t] + gamma * lam * running
        advantages[t] = running
    return advantages, advantages + values[:steps]


@pytest.mark.parametrize("ends", [False, True], ids=["non_episodic", "intrinsic_ends_at_termination"])
def test_intrinsic_rewards_normalisation_and_two_stream_gae_match_a_reference(ends):
    learner = _learner(_config(intrinsic_ends_at_termination=ends))
    module: RNDPolicyModule = learner.module[DEFAULT_MODULE_ID].unwrapped()
    rng = np.random.default_rng(0)
    episodes = [_episode(rng, 7, terminated=True), _episode(rng, 5, terminated=False)]
    before = copy.deepcopy(module)  # statistics as they are before the connector folds the batch in
    # (the learner pipeline elongates the episodes in place: read them first)
    recorded = [(np.asarray(e.get_observations()), np.asarray(e.get_rewards(), np.float64), e.is_terminated)
                for e in episodes]

    batch = learner._learner_connector(rl_module=learner.module, batch={}, episodes=episodes, shared_data={})
    rows = batch[DEFAULT_MODULE_ID]

    # the reference: per episode, e(s) with the statistics before this batch, r_int_t = e(s_{t+1})
    novelties, returns, values = [], [], []
    for observations, _, terminated in recorded:
        observations = torch.as_tensor(observations)  # T + 1 observations
        with torch.no_grad():
            novelty = before.novelty(observations).double().numpy()
            values.append(tuple(v.double().numpy() for v in before.compute_both_values(observations)))
        rewards_int = novelty[1:].copy()
        if ends and terminated:  # the final frame of a terminated episode pays nothing
            rewards_int[-1] = 0.0
        novelties.append(rewards_int)
        running, episode_returns = 0.0, []
        for reward in rewards_int:
            running = GAMMA_INT * running + reward
            episode_returns.append(running)
        returns.append(np.array(episode_returns))
    return_std = np.concatenate(returns).std()  # the running variance starts empty: the batch's own
    expected_advantages, expected_ext, expected_int, expected_rewards = [], [], [], []
    for (_, rewards, terminated), novelty, (v_ext, v_int) in zip(recorded, novelties, values):
        rewards_int = novelty / return_std
        # the game's rewards (300 points for an item) clipped to [−1, 1], as jcwleo's
        a_ext, t_ext = _reference_gae(v_ext, np.clip(rewards, -1, 1), GAMMA, LAMBDA, terminated=terminated)
        a_int, t_int = _reference_gae(v_int, rewards_int, GAMMA_INT, LAMBDA, terminated=ends and terminated)
        # the connector's rows: T steps, then the final observation's row (padding, masked)
        expected_advantages += [EXT * a_ext + INT * a_int, [np.nan]]
        expected_ext += [t_ext, [np.nan]]
        expected_int += [t_int, [np.nan]]
        expected_rewards += [rewards_int, [np.nan]]
    valid = rows[Columns.LOSS_MASK].numpy().astype(bool)
    assert valid.sum() == 12 and len(valid) == 14
    for key, expected in ((Postprocessing.ADVANTAGES, expected_advantages), (Postprocessing.VALUE_TARGETS, expected_ext),
                          (INTRINSIC_VALUE_TARGETS, expected_int), (INTRINSIC_REWARDS, expected_rewards)):
        np.testing.assert_allclose(rows[key].numpy()[valid], np.concatenate(expected)[valid], rtol=2e-4, atol=1e-5,
                                   err_msg=key)
    # the statistics absorbed the batch: per-pixel mean of the last frames of all 14 rows
    last_frames = np.concatenate([observations[..., -1] for observations, _, _ in recorded]).astype(np.float64)
    np.testing.assert_allclose(module.rnd_obs_mean.numpy(), last_frames.mean(0), rtol=1e-5)
    assert float(module.int_return_count) == 12


def test_the_loss_trains_the_rnd_predictor_and_both_value_heads_but_never_the_target():
    learner = _learner()
    module: RNDPolicyModule = learner.module[DEFAULT_MODULE_ID].unwrapped()
    rng = np.random.default_rng(1)
    episodes = [_episode(rng, 40, terminated=False), _episode(rng, 30, terminated=True)]
    target_before = copy.deepcopy(module.rnd_target.state_dict())
    predictor_before = copy.deepcopy(module.rnd_predictor.state_dict())
    vf_int_before = module.vf_int.weight.detach().clone()
    results = learner.update(episodes=episodes, timesteps={})
    metrics = results[DEFAULT_MODULE_ID]
    assert {"rnd_loss", "vf_loss_intrinsic", "intrinsic_reward_mean"} <= set(metrics)
    for key, value in module.rnd_target.state_dict().items():
        assert torch.equal(value, target_before[key]), f"the RND target moved ({key})"
    assert any(not torch.equal(v, predictor_before[k]) for k, v in module.rnd_predictor.state_dict().items())
    assert not torch.equal(module.vf_int.weight, vf_int_before)


@pytest.mark.parametrize("method", [{"name": "ks", "coeff": 1.0}, {"name": "l2", "coeff": 1.0}])
def test_retention_gradients_reach_the_actor_only(method, tmp_path):
    """KS (a KL to the teacher's outputs) and L2 (an anchor to θ*) after the student moved away from
    π*: gradients on trunk and π, none on the value heads or RND."""
    learner = _learner()
    module: RNDPolicyModule = learner.module[DEFAULT_MODULE_ID].unwrapped()
    from ftcl.retention.registry import parse_method
    from ftcl.retention.term import TermInputs

    term = parse_method(method).build_term()
    teacher = copy.deepcopy(module).requires_grad_(False)
    term.prepare(module, None, teacher)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    observations = torch.as_tensor(np.random.default_rng(2).integers(0, 256, (8,) + OBSERVATIONS.shape, dtype=np.uint8))
    module.zero_grad(set_to_none=True)
    term.loss(TermInputs(observations=observations,
                         student_distribution_inputs=module.policy_distribution_inputs(observations))).backward()
    reached = {name for name, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert reached and all(name.startswith(("trunk.", "pi.")) for name in reached), sorted(reached)
    assert any(name.startswith("trunk.") for name in reached) and any(name.startswith("pi.") for name in reached)
    assert set(module.actor_parameters()) == {n for n, _ in module.named_parameters() if n.startswith(("trunk.", "pi."))}
    assert not set(module.critic_parameters()) & {n for n, _ in module.named_parameters() if n.startswith("rnd_")}


def test_the_inference_module_holds_trunk_and_policy_only():
    learner = _learner()
    state = learner.module[DEFAULT_MODULE_ID].get_state(inference_only=True)
    assert state and all(key.startswith(("trunk.", "pi.")) for key in state), sorted(state)


def test_bad_rnd_options_are_refused():
    for options, message in (({"gamma_int": 1.5}, "gamma_int"), ({"rnd_update_proportion": 0.0}, "rnd_update_proportion"),
                             ({"ext_coef": -1.0}, "ext_coef"), ({"rnd_obs_norm_steps": 2.5}, "rnd_obs_norm_steps"),
                             ({"ext_reward_clip": 0.0}, "ext_reward_clip"),
                             ({"intrinsic_ends_at_termination": 1}, "intrinsic_ends_at_termination")):
        with pytest.raises(ValueError, match=message):
            _config(**options).validate()
