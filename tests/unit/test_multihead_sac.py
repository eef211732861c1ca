"""Multi-head SAC RLModule (paper §4.2 / Continual World networks) and no bootstrapping at stage
boundaries (paper §2.3, RetentionSAC's transition replay), on the real RoboticSequence env and a
real RetentionSAC.

Stage successes come from Meta-World's scripted expert policies acting in the real env (a random
policy never solves a stage in a test-sized budget), turned into RLlib episodes as an EnvRunner
would record them.
"""
from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from metaworld.policies import ENV_POLICY_MAP
from torch import nn

from ray.rllib.algorithms.sac.sac_learner import QF_LOSS_KEY, QF_PREDS, QF_TWIN_PREDS
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

from ftcl.algorithms.sac import RetentionSAC, RetentionSACConfig
from ftcl.algorithms.transition_replay import (
    STAGE_DONE_TERMINALS_METRIC,
    TransitionReplay,
    episodes_to_transitions,
    rows_to_train_batch,
    transition_terminals,
)
from ftcl.envs.robotic_sequence import META_WORLD_OBS_DIM, Options, RoboticSequenceEnv, make_env
from ftcl.models.multihead_sac import MultiHeadSACModule, SquashedGaussian
from ftcl.retention.registry import parse_method
from ftcl.retention.term import TermInputs

TWO_STAGES = {"stages": ["reach", "button-press-topdown"], "stage_time_limit": 200, "seed": 0}
TINY_NET = {"hidden_layers": 2, "hidden_size": 32}


# --------------------------------------------------------------------------------------- helpers
def build_module(env: gym.Env, **model_config: Any) -> MultiHeadSACModule:
    module = MultiHeadSACModule(
        observation_space=env.observation_space, action_space=env.action_space, model_config=model_config
    )
    module.make_target_networks()
    return module


def with_stage(observations: np.ndarray, stages: list[int], num_stages: int) -> torch.Tensor:
    """Copies of the observations whose one-hot names the given stages (row i -> stages[i])."""
    rows = np.array(observations, dtype=np.float32, copy=True)
    rows[:, META_WORLD_OBS_DIM : META_WORLD_OBS_DIM + num_stages] = 0.0
    rows[np.arange(len(rows)), META_WORLD_OBS_DIM + np.asarray(stages)] = 1.0
    return torch.as_tensor(rows)


def expert_action(env: RoboticSequenceEnv, obs: np.ndarray) -> np.ndarray:
    stage = int(np.argmax(obs[META_WORLD_OBS_DIM : META_WORLD_OBS_DIM + env.num_stages]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        action = ENV_POLICY_MAP[env.stage_names[stage]]().get_action(obs[:META_WORLD_OBS_DIM].astype(np.float64))
    return np.clip(action, -1.0, 1.0).astype(np.float32)


def expert_episode(env: RoboticSequenceEnv, seed: int) -> SingleAgentEpisode:
    """One real RoboticSequence episode of the scripted experts, as an EnvRunner records it."""
    obs, info = env.reset(seed=seed)
    observations, infos, actions, rewards = [obs], [info], [], []
    terminated = truncated = False
    while not (terminated or truncated):
        action = expert_action(env, obs)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs), infos.append(info), actions.append(action), rewards.append(float(reward))
    episode = SingleAgentEpisode(
        observations=observations,
        infos=infos,
        actions=actions,
        rewards=rewards,
        terminated=terminated,
        truncated=truncated,
        observation_space=env.observation_space,
        action_space=env.action_space,
        len_lookback_buffer=0,
    )
    return episode.to_numpy()


def copy_with_new_id(episode: SingleAgentEpisode, start: int, stop: int) -> SingleAgentEpisode:
    """Steps [start, stop) of an episode as a fresh chunk with its own id (as an EnvRunner cuts them)."""
    return SingleAgentEpisode(
        id_=uuid.uuid4().hex,
        observations=list(episode.get_observations(slice(start, stop + 1))),
        infos=list(episode.get_infos(slice(start, stop + 1))),
        actions=list(episode.get_actions(slice(start, stop))),
        rewards=list(episode.get_rewards(slice(start, stop))),
        terminated=episode.is_terminated and stop == len(episode),
        truncated=episode.is_truncated and stop == len(episode),
        observation_space=episode.observation_space,
        action_space=episode.action_space,
        len_lookback_buffer=0,
    ).to_numpy()


def intermediate_stage_done_steps(episode: SingleAgentEpisode) -> list[int]:
    """Transitions t whose step info says stage_done while the episode goes on."""
    infos = episode.get_infos(slice(1, len(episode) + 1))
    return [t for t, info in enumerate(infos) if info.get("stage_done") and t < len(episode) - 1]


# ------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def four_stage_env() -> Iterator[RoboticSequenceEnv]:
    env = make_env(Options().model_dump())  # the paper's 4 stages: obs = 39 + 4 + 1
    yield env
    env.close()


@pytest.fixture(scope="module")
def two_stage_env() -> Iterator[RoboticSequenceEnv]:
    env = make_env(TWO_STAGES)
    yield env
    env.close()


@pytest.fixture(scope="module")
def solved_episode(two_stage_env: RoboticSequenceEnv) -> SingleAgentEpisode:
    """The experts solve reach then button-press-topdown: one intermediate stage_done step."""
    episode = expert_episode(two_stage_env, seed=0)
    assert episode.is_terminated and episode.get_infos(-1)["success"]
    assert len(intermediate_stage_done_steps(episode)) == 1
    return episode


# ----------------------------------------------------------------------------- architecture
def test_paper_architecture_layers_and_parameter_count(four_stage_env: RoboticSequenceEnv) -> None:
    module = build_module(four_stage_env)  # defaults: 4 x 256, LayerNorm, 4 heads inferred
    assert module.num_heads == 4 and module.one_hot_start == META_WORLD_OBS_DIM
    for trunk in (module.pi_encoder, module.qf_encoder, module.qf_twin_encoder):
        layers = list(trunk.layers)
        linears = [layer for layer in layers if isinstance(layer, nn.Linear)]
        assert len(linears) == 4 and all(layer.out_features == 256 for layer in linears)
        # Linear -> LayerNorm -> tanh (CW), then (Linear -> LeakyReLU(0.2)) x 3
        assert isinstance(layers[1], nn.LayerNorm) and isinstance(layers[2], nn.Tanh)
        assert sum(isinstance(layer, nn.LayerNorm) for layer in layers) == 1
        leaky = [layer for layer in layers if isinstance(layer, nn.LeakyReLU)]
        assert len(leaky) == 3 and all(layer.negative_slope == 0.2 for layer in leaky)
    obs_dim, action_dim, heads, hidden = META_WORLD_OBS_DIM + 4 + 1, 4, 4, 256

    def trunk_size(inputs: int) -> int:
        return inputs * hidden + hidden + 2 * hidden + 3 * (hidden * hidden + hidden)

    def count(prefix: str) -> int:
        return sum(p.numel() for n, p in module.named_parameters() if n.split(".")[0] == prefix)

    assert count("pi_encoder") == trunk_size(obs_dim)
    assert count("pi") == heads * (hidden * 2 * action_dim + 2 * action_dim)
    for name in ("qf", "qf_twin"):
        assert count(f"{name}_encoder") == trunk_size(obs_dim + action_dim)
        assert count(name) == heads * (hidden + 1)
        assert count(f"target_{name}") == count(name)


def test_layer_norm_can_be_switched_off(two_stage_env: RoboticSequenceEnv) -> None:
    module = build_module(two_stage_env, layer_norm=False, **TINY_NET)
    layers = list(module.pi_encoder.layers)
    assert not any(isinstance(layer, nn.LayerNorm) for layer in layers)
    assert all(isinstance(layers[i], nn.LeakyReLU) for i in (1, 3))


def test_output_is_the_active_stage_head(four_stage_env: RoboticSequenceEnv) -> None:
    torch.manual_seed(0)
    module = build_module(four_stage_env, **TINY_NET)
    obs, _ = four_stage_env.reset(seed=0)
    stages = [0, 1, 2, 3, 2, 0]
    observations = with_stage(np.repeat(obs[None], len(stages), 0), stages, 4)
    actions = torch.rand(len(stages), 4) * 2 - 1
    with torch.no_grad():
        inputs = module.actor_distribution_inputs(observations)
        q_values = module.compute_q_values({Columns.OBS: observations, Columns.ACTIONS: actions})
        for row, stage in enumerate(stages):
            features = module.pi_encoder(observations[row : row + 1])
            mean, log_std = module.pi.heads[stage](features).chunk(2, dim=-1)
            expected = torch.cat([mean, log_std.clamp(-20.0, 2.0)], dim=-1)[0]
            torch.testing.assert_close(inputs[row], expected, rtol=0, atol=1e-6)
            critic_input = torch.cat([observations[row : row + 1], actions[row : row + 1]], dim=-1)
            q1 = module.qf.heads[stage](module.qf_encoder(critic_input))
            q2 = module.qf_twin.heads[stage](module.qf_twin_encoder(critic_input))
            torch.testing.assert_close(q_values[row], torch.min(q1, q2)[0, 0], rtol=0, atol=1e-6)
    # Same Meta-World state, different stage: a different head answers.
    assert not torch.allclose(inputs[0], inputs[1])


def test_gradients_reach_only_the_active_heads(four_stage_env: RoboticSequenceEnv) -> None:
    torch.manual_seed(0)
    module = build_module(four_stage_env, **TINY_NET)
    obs, _ = four_stage_env.reset(seed=0)
    observations = with_stage(np.repeat(obs[None], 4, 0), [0, 2, 2, 0], 4)
    actions = torch.zeros(4, 4)
    loss = module.actor_distribution_inputs(observations).square().sum()
    loss = loss + module.compute_q_values({Columns.OBS: observations, Columns.ACTIONS: actions}).square().sum()
    loss.backward()
    for heads in (module.pi, module.qf):
        for stage, head in enumerate(heads.heads):
            gradient = head.weight.grad
            if stage in (0, 2):
                assert gradient is not None and gradient.abs().sum() > 0, f"active head {stage} got no gradient"
            else:
                assert gradient is None or torch.count_nonzero(gradient) == 0, f"inactive head {stage} moved"
    assert module.pi_encoder.layers[0].weight.grad.abs().sum() > 0  # the shared trunk learns


def test_log_std_is_clipped_in_the_module_and_taken_as_is_by_the_distribution(
    two_stage_env: RoboticSequenceEnv,
) -> None:
    module = build_module(two_stage_env, log_std_bounds=[-7.0, 1.5], **TINY_NET)
    obs, _ = two_stage_env.reset(seed=0)
    with torch.no_grad():
        for head in module.pi.heads:
            head.bias[4:] = torch.tensor([50.0, -50.0, 0.3, -6.0])
        inputs = module._forward_inference({Columns.OBS: torch.as_tensor(obs[None])})[Columns.ACTION_DIST_INPUTS]
    log_std = inputs[0, 4:]
    assert log_std[0] == 1.5 and log_std[1] == -7.0
    distribution = SquashedGaussian.from_logits(inputs)
    torch.testing.assert_close(distribution._dist.scale.log()[0], log_std, rtol=0, atol=1e-6)  # no 2nd clamp
    # Evaluation (explore=False) acts with tanh(μ), as Continual World does, not the raw μ.
    mean = inputs[0, :4]
    torch.testing.assert_close(distribution.to_deterministic().sample()[0], torch.tanh(mean))


def test_bad_model_options_are_named(two_stage_env: RoboticSequenceEnv) -> None:
    with pytest.raises(ValueError, match="unknown model option.*hidden_layer'.*allowed"):
        build_module(two_stage_env, hidden_layer=3)
    with pytest.raises(ValueError, match="log_std_bounds"):
        build_module(two_stage_env, log_std_bounds=[2.0, -20.0])
    # 3 heads would put the "one-hot" on a Meta-World dim (unbounded): refused.
    with pytest.raises(ValueError, match="should be the stage one-hot"):
        build_module(two_stage_env, num_heads=3)
    pendulum = gym.make("Pendulum-v1")
    with pytest.raises(ValueError, match="cannot infer num_heads"):
        build_module(pendulum)


def test_policy_api_sees_heads_as_actor_and_critic(four_stage_env: RoboticSequenceEnv) -> None:
    torch.manual_seed(0)
    module = build_module(four_stage_env, **TINY_NET)
    actor, critic = module.actor_parameters(), module.critic_parameters()
    assert actor and all(n.split(".")[0] in ("pi_encoder", "pi") for n in actor)
    assert {f"pi.heads.{k}.weight" for k in range(4)} <= set(actor)
    assert {f"{c}.heads.{k}.weight" for c in ("qf", "qf_twin") for k in range(4)} <= set(critic)
    assert all(n.split(".")[0] in ("qf_encoder", "qf", "qf_twin_encoder", "qf_twin") for n in critic)
    assert not set(actor) & set(critic)
    assert set(actor) | set(critic) == {n for n, _ in module.named_parameters() if not n.startswith("target_")}
    obs, _ = four_stage_env.reset(seed=0)
    observations = with_stage(np.repeat(obs[None], 4, 0), [0, 1, 2, 3], 4)
    with torch.no_grad():
        torch.testing.assert_close(
            module.policy_distribution_inputs(observations),
            module._forward_inference({Columns.OBS: observations})[Columns.ACTION_DIST_INPUTS], rtol=0, atol=0,
        )
    assert module.policy_distribution_kind == "diag_gaussian"

    # BC on π*'s stage-1 states: after the actor drifts, its gradient moves the trunk and head 1
    # of the actor only — no critic parameter and no other stage's head.
    states = with_stage(np.repeat(obs[None], 16, 0) + np.random.default_rng(0).normal(0, 0.01, (16, obs.size)), [1] * 16, 4)
    term = parse_method({"name": "bc", "coeff": 1.0, "buffer_size": 16, "batch_size": 16}).build_term(0)
    term.prepare(module, {"obs": states.numpy()})
    with torch.no_grad():
        for parameter in actor.values():
            parameter.add_(0.1 * torch.randn_like(parameter))
    assert term.critic_loss() is None
    actor_loss = term.loss(TermInputs(observations=states))
    assert actor_loss.item() > 0
    actor_loss.backward()
    moved = {n for n, p in module.named_parameters() if p.grad is not None and torch.count_nonzero(p.grad) > 0}
    assert "pi_encoder.layers.0.weight" in moved and "pi.heads.1.weight" in moved
    assert moved <= set(actor)
    assert not moved & {f"pi.heads.{k}.weight" for k in (0, 2, 3)}


# ----------------------------------------------------------------------------- stage boundaries
def test_transition_terminals_of_a_real_episode(solved_episode: SingleAgentEpisode) -> None:
    terminals = transition_terminals(solved_episode)
    [boundary] = intermediate_stage_done_steps(solved_episode)
    expected = [False] * len(solved_episode)
    expected[boundary] = True  # reach solved: terminal for SAC, although the episode goes on
    expected[-1] = True  # button-press-topdown solved: the episode terminates
    assert terminals == expected
    # The stage switch is real: the next observation already shows stage 2's one-hot.
    next_obs = solved_episode.get_observations(boundary + 1)
    assert next_obs[META_WORLD_OBS_DIM + 1] == 1.0 and next_obs[-1] == 0.0


def test_truncated_time_out_stays_bootstrapped() -> None:
    env = make_env({**TWO_STAGES, "stage_time_limit": 5, "timeout_is_terminal": False})
    obs, info = env.reset(seed=0)
    observations, infos = [obs], [info]
    for _ in range(5):
        obs, _, terminated, truncated, info = env.step(np.zeros(4, dtype=np.float32))
        observations.append(obs), infos.append(info)
    env.close()
    assert truncated and not terminated and infos[-1]["stage_done"]
    episode = SingleAgentEpisode(
        observations=observations, infos=infos, actions=[np.zeros(4, np.float32)] * 5, rewards=[0.0] * 5,
        truncated=True, len_lookback_buffer=0,
    )
    assert transition_terminals(episode) == [False] * 5


def test_n_step_returns_are_refused() -> None:
    """An n-step return would sum rewards across a stage boundary; the transition replay is 1-step."""
    config = RetentionSACConfig().environment("Pendulum-v1").training(n_step=3)
    with pytest.raises(ValueError, match="n_step=3"):
        config.validate()
    config.training(n_step=1).validate()


# ------------------------------------------------------------------------- RLlib, end to end
@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    import ray

    # address="local": a private Ray instance even if `ray start` left a cluster on this machine
    ray.init(address="local", num_cpus=1, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield
    ray.shutdown()


def tiny_config(stage_done_is_terminal: bool = True) -> RetentionSACConfig:
    return (
        RetentionSACConfig()
        .environment(RoboticSequenceEnv, env_config={**TWO_STAGES, "stage_time_limit": 50})
        .env_runners(num_env_runners=0, rollout_fragment_length=50)
        .learners(num_learners=0)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=MultiHeadSACModule, model_config=TINY_NET))
        .training(
            train_batch_size_per_learner=64,
            num_steps_sampled_before_learning_starts=100,
            replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": 20_000},
            stage_done_is_terminal=stage_done_is_terminal,
        )
        .debugging(seed=0, log_level="ERROR")
    )


@pytest.fixture(scope="module")
def algo(ray_session: None) -> Iterator[Any]:
    algorithm = tiny_config().build_algo()
    yield algorithm
    algorithm.stop()


def module_of(algorithm: Any) -> MultiHeadSACModule:
    return algorithm.learner_group._learner.module[DEFAULT_MODULE_ID].unwrapped()


@pytest.mark.slow
def test_trains_in_retention_sac(algo: Any) -> None:
    module = module_of(algo)
    assert isinstance(module, MultiHeadSACModule) and module.num_heads == 2
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    trained = 0
    for _ in range(4):
        result = algo.train()
        trained += int(result["learners"][DEFAULT_MODULE_ID]["num_module_steps_trained"])
    assert trained > 0
    changed = {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}
    # Random play stays in stage 0 (reach): its heads, the trunks and the targets (Polyak) move.
    for name in ("pi_encoder.layers.0.weight", "pi.heads.0.weight", "qf.heads.0.weight",
                 "qf_twin_encoder.layers.0.weight", "target_qf.heads.0.weight"):
        assert name in changed, name
    assert "pi.heads.1.weight" not in changed and "qf.heads.1.weight" not in changed
    # The EnvRunner's (inference-only) copy got the new actor weights.
    runner_module = algo.env_runner.module
    assert torch.equal(runner_module.pi.heads[0].weight, module.pi.heads[0].weight)
    assert not hasattr(runner_module, "qf")
    # It replays from the transition replay, with stage boundaries as terminals.
    assert isinstance(algo.local_replay_buffer, TransitionReplay) and algo.local_replay_buffer.stage_done_is_terminal
    assert len(algo.local_replay_buffer) > 0


def test_replay_rows_mark_stage_done_terminal(solved_episode: SingleAgentEpisode) -> None:
    [boundary] = intermediate_stage_done_steps(solved_episode)
    # (a) The whole real episode as the replay stores it.
    rows = episodes_to_transitions([solved_episode], stage_done_is_terminal=True)
    assert len(rows["obs"]) == len(solved_episode)
    assert np.flatnonzero(rows["terminateds"]).tolist() == [boundary, len(solved_episode) - 1]
    assert np.flatnonzero(rows["stage_done_only"]).tolist() == [boundary]
    # (b) Uniform samples keep each row's flag: every sampled row agrees with the env.
    buffer = TransitionReplay(capacity=10_000, stage_done_is_terminal=True, seed=0)
    buffer.add([solved_episode])
    sampled = buffer.sample_rows(num_minibatches=3, minibatch_size=1000)
    truth = transition_terminals(solved_episode)
    step_of = {(o.tobytes(), n.tobytes()): t for t, (o, n) in enumerate(zip(rows["obs"], rows["next_obs"]))}
    steps = [step_of[(o.tobytes(), n.tobytes())] for o, n in zip(sampled["obs"], sampled["next_obs"])]
    assert sampled["terminateds"].tolist() == [truth[t] for t in steps]
    assert boundary in {t for t, done in zip(steps, sampled["terminateds"]) if done}


def assert_td_targets(learner: Any, config: Any, batch: Any, boundary_row: int) -> None:
    """Run RLlib's SAC critic loss row by row with Q_φ(s,a) = 0, min Q_φ̄(s',a') = V̄ = 1000 and
    log π = 0, so that the loss is Huber(0, y) and reveals the TD target y of each row."""
    gamma, v_next = config.gamma, 1000.0
    rewards = torch.as_tensor(np.asarray(batch[Columns.REWARDS]), dtype=torch.float32)
    terminateds = torch.as_tensor(np.asarray(batch[Columns.TERMINATEDS]))
    zeros = torch.zeros(1)
    for row in range(len(rewards)):
        one = {Columns.REWARDS: rewards[row : row + 1], Columns.TERMINATEDS: terminateds[row : row + 1]}
        one.update(weights=torch.ones(1), n_step=torch.ones(1))
        fwd_out = {
            QF_PREDS: zeros, QF_TWIN_PREDS: zeros, "q_target_next": torch.full((1,), v_next),
            "logp_next_resampled": zeros, "logp_resampled": zeros, "q_curr": zeros,
        }
        learner._compute_loss_for_module_continuous(module_id=DEFAULT_MODULE_ID, config=config, batch=one, fwd_out=fwd_out)
        # y = r at the stage boundary; y = r + γ·V̄(s') elsewhere (no episode end in this window)
        target = float(rewards[row]) + (0.0 if row == boundary_row else gamma * v_next)
        huber = 0.5 * target**2 if abs(target) < 1.0 else abs(target) - 0.5  # Huber, δ = 1
        loss = learner._temp_losses[(DEFAULT_MODULE_ID, QF_LOSS_KEY)]
        torch.testing.assert_close(loss, torch.tensor(huber), rtol=1e-5, atol=1e-4, msg=f"row {row}")


@pytest.mark.slow
def test_critic_target_is_the_reward_at_a_stage_boundary(algo: Any, solved_episode: SingleAgentEpisode) -> None:
    """y = r for the stage_done transition, y = r + γ·V̄(s') for the others, in RLlib's SAC loss."""
    learner = algo.learner_group._learner
    [boundary] = intermediate_stage_done_steps(solved_episode)
    window = copy_with_new_id(solved_episode, boundary - 2, boundary + 3)  # 5 steps, boundary at row 2
    batch = rows_to_train_batch(episodes_to_transitions([window], stage_done_is_terminal=True))
    assert float(np.asarray(batch[Columns.REWARDS])[2]) > 100  # the success step's β·r·(T − t) bonus
    trainer_metrics, learner.metrics = learner.metrics, MetricsLogger()  # keep these logs out of train()
    try:
        assert_td_targets(learner, algo.config, batch, boundary_row=2)
    finally:
        learner.metrics = trainer_metrics


@pytest.mark.slow
def test_training_run_counts_stage_done_terminals(algo: Any, solved_episode: SingleAgentEpisode) -> None:
    """A real train() on a buffer that holds the experts' stage switch: the learner saw it as terminal."""
    [boundary] = intermediate_stage_done_steps(solved_episode)
    algo.local_replay_buffer.add(
        [copy_with_new_id(solved_episode, boundary - 1, boundary + 1) for _ in range(300)]
    )
    result = algo.train()
    counted = result["learners"][DEFAULT_MODULE_ID][STAGE_DONE_TERMINALS_METRIC]
    assert counted > 0


def test_stage_done_handling_can_be_switched_off(solved_episode: SingleAgentEpisode) -> None:
    [boundary] = intermediate_stage_done_steps(solved_episode)
    terminal_rows = {}
    for flag in (True, False):
        buffer = RetentionSAC._create_local_replay_buffer_if_necessary(None, tiny_config(stage_done_is_terminal=flag))
        assert isinstance(buffer, TransitionReplay) and buffer.stage_done_is_terminal is flag
        buffer.add([solved_episode])
        terminal_rows[flag] = np.flatnonzero(buffer.online["terminateds"][: len(buffer)]).tolist()
    assert terminal_rows[True] == [boundary, len(solved_episode) - 1]
    assert terminal_rows[False] == [len(solved_episode) - 1]  # only the episode's real end


def test_checkpoint_round_trip_restores_class_options_and_weights(
    two_stage_env: RoboticSequenceEnv, tmp_path: Any
) -> None:
    """π* is saved with `save_to_path` by pre-training and restored for fine-tuning."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    torch.manual_seed(1)
    module = build_module(two_stage_env, layer_norm=False, **TINY_NET)
    module.save_to_path(tmp_path / "module")
    restored = RLModule.from_checkpoint(tmp_path / "module")
    assert isinstance(restored, MultiHeadSACModule) and restored.options == module.options
    original = dict(module.named_parameters())
    # Target networks are made by the Learner (make_target_networks), as for RLlib's own SAC.
    assert set(dict(restored.named_parameters())) == {n for n in original if not n.startswith("target_")}
    for name, parameter in restored.named_parameters():
        assert torch.equal(parameter, original[name]), name
