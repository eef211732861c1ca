"""RLlib side of retention: PPO/APPO/SAC learners, pretrained loading, EM replay, config checks,
the learner's checkpointed term state and each critic's own L2 penalty."""
from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import gymnasium as gym
import numpy as np
import pytest
import ray
import torch

from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.training_data import TrainingData
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME
from ray.rllib.utils.replay_buffers.episode_replay_buffer import EpisodeReplayBuffer

from ftcl.algorithms import algorithm_config_class
from ftcl.algorithms.pi_star import read_pi_star, save_pi_star
from ftcl.algorithms.ppo import RetentionPPO, RetentionPPOConfig
from ftcl.algorithms.retention_algorithm import RETENTION_CONFIG_KEY
from ftcl.algorithms.sac import RetentionSACConfig
from ftcl.algorithms.transition_replay import TransitionReplay
from ftcl.data.retention_data import load_retention_data, save_retention_data
from ftcl.pretrain.data import collect_policy_data
from ftcl.retention.registry import parse_method

pytestmark = pytest.mark.slow

ENVS = {"ppo": "CartPole-v1", "appo": "CartPole-v1", "sac": "Pendulum-v1"}
TERMS = {
    "l2": {"name": "l2", "coeff": 5.0},
    "ewc": {"name": "ewc", "coeff": 50.0, "fisher_batches": 2, "fisher_batch_size": 32},
    "bc": {"name": "bc", "coeff": 5.0, "buffer_size": 64, "batch_size": 32},
    "ks": {"name": "ks", "coeff": 5.0, "decay": 0.5, "floor": 0.1},
}


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    ray.init(address="local", num_cpus=1, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield
    ray.shutdown()


def base_config(algorithm: str):
    """A tiny config: 8-unit nets, no remote EnvRunners, small batches."""
    config = (
        algorithm_config_class(algorithm)()
        .environment(ENVS[algorithm])
        .env_runners(num_env_runners=0, rollout_fragment_length=32)
        .rl_module(model_config={"fcnet_hiddens": [8]})
        .learners(num_learners=0)
        .debugging(seed=0)
    )
    if algorithm == "sac":
        return config.training(
            train_batch_size_per_learner=32,
            num_steps_sampled_before_learning_starts=0,
            replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": 2000},
        )
    if algorithm == "appo":
        return config.training(train_batch_size_per_learner=32)
    return config.training(train_batch_size=64, minibatch_size=32, num_epochs=1)


SAC_LOG_ALPHA = -1.5
"""log α of the test π* of SAC."""


def distinctive_weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Overwrite every parameter with a recognisable pattern (not an initialisation)."""
    with torch.no_grad():
        for index, (name, parameter) in enumerate(module.named_parameters()):
            pattern = torch.cos(torch.arange(parameter.numel(), dtype=torch.float32) * 0.7 + index)
            parameter.copy_(0.3 * pattern.reshape(parameter.shape) + 0.01 * index)
    return {name: p.detach().clone() for name, p in module.named_parameters()}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """Per algorithm: a π* (whole module, SAC's α) with distinctive weights θ* and π*'s data."""
    root = tmp_path_factory.mktemp("pretrained")
    artifacts = {}
    for algorithm in ("ppo", "appo", "sac"):
        env = gym.make(ENVS[algorithm])
        spec = base_config(algorithm).get_rl_module_spec(env=env)
        spec.observation_space, spec.action_space = env.observation_space, env.action_space
        module = spec.build()
        theta_star = distinctive_weights(module)
        module_dir = root / f"{algorithm}_module"
        save_pi_star(module, module_dir, log_alpha=SAC_LOG_ALPHA if algorithm == "sac" else None)
        data = collect_policy_data(module, env, num_transitions=300, seed=1)
        data_path = save_retention_data(root / f"{algorithm}_data.npz", data)
        artifacts[algorithm] = {"module": module_dir, "data": data_path, "theta_star": theta_star}
    return artifacts


def build(algorithm: str, method: dict, pretrained_artifacts: dict, **config_overrides):
    config = base_config(algorithm)
    if config_overrides:
        config = config.training(**config_overrides)
    art = pretrained_artifacts[algorithm]
    return config.retention(method=method, pretrained_module_path=art["module"], retention_data_path=art["data"]).build_algo()


def train_batch(algo, algorithm: str):
    """A learner-ready batch from real env steps (through the learner connector)."""
    learner = algo.learner_group._learner
    episodes = algo.env_runner.sample(num_timesteps=64, random_actions=False)
    if algorithm == "sac":
        buffer = EpisodeReplayBuffer(capacity=1000)
        buffer.add(episodes)
        episodes = buffer.sample(num_items=32, n_step=1, sample_episodes=True, gamma=0.99)
    elif algorithm == "appo":
        episodes = algo.env_runner.sample(num_timesteps=32, random_actions=False)
    return learner._make_batch_if_necessary(TrainingData(episodes=episodes)).policy_batches


def gradients(learner, batch, seed: int = 0) -> dict[str, torch.Tensor]:
    """Gradients per parameter name of the default module, exactly as the optimizers get them."""
    torch.manual_seed(seed)  # SAC's losses sample actions
    fwd_out = learner.module.forward_train(batch)
    losses = learner.compute_losses(fwd_out=fwd_out, batch=batch)
    grads = learner.compute_gradients(losses)
    by_id = {id(learner._params[ref]): g for ref, g in grads.items()}
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    return {name: by_id[id(p)].clone() for name, p in module.named_parameters() if id(p) in by_id}


def actor_and_critic(module) -> tuple[list[str], list[str]]:
    """Parameter names of the actor and of the critics, as the module's RetentionPolicyAPI says."""
    return list(module.actor_parameters()), list(module.critic_parameters())


def use_method(learner, method: dict, data) -> None:
    """Switch the learner to another method and prepare it at the module's current weights."""
    learner.retention_method = parse_method(method)
    learner.retention_term = learner.retention_method.build_term(seed=0)
    learner.prepare_retention(data)


def drift_(learner, part: str = "actor", scale: float = 0.2) -> None:
    """Move the actor (or critic) away from θ* as fine-tuning would (every term has zero gradient at θ*)."""
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    names = actor_and_critic(module)[0 if part == "actor" else 1]
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name in names:
                parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


drift_actor_ = drift_


# ---------------------------------------------------------------- θ*, teacher, env runners
@pytest.mark.parametrize("algorithm", ["ppo", "sac"])
def test_theta_star_and_teacher_are_the_restored_pretrained_weights(algorithm, pretrained):
    algo = build(algorithm, TERMS["ks"], pretrained)
    try:
        learner = algo.learner_group._learner
        expected = pretrained[algorithm]["theta_star"]
        module = learner.module[DEFAULT_MODULE_ID].unwrapped()
        for name, parameter in module.named_parameters():
            if name in expected:
                torch.testing.assert_close(parameter.detach(), expected[name])
        teacher = dict(learner.retention_teacher.named_parameters())
        for name in actor_and_critic(module)[0]:
            torch.testing.assert_close(teacher[name], expected[name])
        runner_state = algo.env_runner.module.get_state()
        for name, value in runner_state.items():
            if name in expected:
                np.testing.assert_allclose(np.asarray(value), expected[name].numpy(), rtol=1e-6)
        checksum = sum(float(expected[n].double().sum()) for n in actor_and_critic(module)[0])
        assert algo.retention_summaries[0]["theta_star_checksum"] == pytest.approx(checksum, rel=1e-6)
    finally:
        algo.stop()


def test_ewc_anchor_and_bc_labels_come_from_theta_star_not_a_fresh_init(pretrained):
    algo = build("ppo", TERMS["ewc"], pretrained)
    try:
        learner = algo.learner_group._learner
        expected = pretrained["ppo"]["theta_star"]
        for name, anchor in learner.retention_term.anchor.items():
            torch.testing.assert_close(anchor, expected[name])
        assert set(learner.retention_term.anchor) == {
            n for n in expected if n.startswith(("pi.", "encoder.actor_encoder."))
        }
        use_method(learner, TERMS["bc"], load_retention_data(pretrained["ppo"]["data"]))
        term = learner.retention_term
        data = load_retention_data(pretrained["ppo"]["data"])
        # the data file stores π*'s outputs at collection time; the buffer labels must match them
        stored = {tuple(np.round(o, 5)): d for o, d in zip(data["obs"], data["action_dist_inputs"])}
        for obs, label in zip(term.buffer_observations[:10], term.buffer_teacher_inputs[:10]):
            np.testing.assert_allclose(label.numpy(), stored[tuple(np.round(obs.numpy(), 5))], rtol=1e-4, atol=1e-5)
    finally:
        algo.stop()


def test_scratch_does_not_load_the_pretrained_weights(pretrained):
    algo = build("ppo", {"name": "scratch"}, pretrained)
    try:
        module = algo.learner_group._learner.module[DEFAULT_MODULE_ID].unwrapped()
        expected = pretrained["ppo"]["theta_star"]
        assert not torch.allclose(dict(module.named_parameters())["pi.net.mlp.0.weight"], expected["pi.net.mlp.0.weight"])
    finally:
        algo.stop()


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("algorithm", ["ppo", "appo", "sac"])
def test_every_term_changes_actor_gradients_and_leaves_critic_gradients_alone(algorithm, pretrained):
    algo = build(algorithm, {"name": "finetune"}, pretrained)
    try:
        learner = algo.learner_group._learner
        data = load_retention_data(pretrained[algorithm]["data"])
        batch = train_batch(algo, algorithm)
        module = learner.module[DEFAULT_MODULE_ID].unwrapped()
        actor, critic = actor_and_critic(module)
        assert actor and critic
        for term_name, method in TERMS.items():
            use_method(learner, method, data)  # at θ*
            drift_actor_(learner)
            with_term = gradients(learner, batch)
            coeff = learner.retention_term.coeff
            learner.retention_term.coeff = 0.0
            without_term = gradients(learner, batch)
            learner.retention_term.coeff = coeff
            actor_difference = sum(float((with_term[n] - without_term[n]).abs().sum()) for n in actor)
            assert actor_difference > 1e-4, f"{algorithm}/{term_name} did not change the actor's gradients"
            for name in critic:
                torch.testing.assert_close(with_term[name], without_term[name], msg=f"{algorithm}/{term_name}: {name}")
            algo.learner_group._learner.load_pi_star(read_pi_star(pretrained[algorithm]["module"]))
    finally:
        algo.stop()


def test_sac_policy_optimizer_step_includes_the_term(pretrained):
    """A real SAC update: the actor ends elsewhere with the term, the critics end identical."""
    algo = build("sac", TERMS["bc"], pretrained)
    try:
        learner = algo.learner_group._learner
        drift_actor_(learner)
        batch = train_batch(algo, "sac")
        state = learner.get_state()
        module = learner.module[DEFAULT_MODULE_ID].unwrapped()
        actor, critic = actor_and_critic(module)

        def update_and_read(coeff: float) -> dict[str, torch.Tensor]:
            learner.set_state(state)
            learner.retention_term.coeff = coeff
            torch.manual_seed(0)
            learner.update(batch=ray.rllib.policy.sample_batch.MultiAgentBatch(batch, env_steps=32), timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: 100})
            return {n: p.detach().clone() for n, p in module.named_parameters()}

        with_term, without_term = update_and_read(5.0), update_and_read(0.0)
        assert any(not torch.allclose(with_term[n], without_term[n]) for n in actor)
        for name in critic:
            torch.testing.assert_close(with_term[name], without_term[name])
    finally:
        algo.stop()


# ---------------------------------------------------------------- gate: skip-train, critic warm-up
def test_skip_train_and_critic_warmup_gate_updates(pretrained):
    method = {"name": "finetune", "skip_train_env_steps": 100, "critic_warmup_env_steps": 100}
    algo = build("ppo", method, pretrained, lr=0.01)
    try:
        learner = algo.learner_group._learner
        module = learner.module[DEFAULT_MODULE_ID].unwrapped()
        actor, critic = actor_and_critic(module)
        batch = ray.rllib.policy.sample_batch.MultiAgentBatch(train_batch(algo, "ppo"), env_steps=64)

        def changed_after_update(env_step: int) -> set[str]:
            before = {n: p.detach().clone() for n, p in module.named_parameters()}
            learner.update(batch=batch, timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: env_step})
            return {n for n, p in module.named_parameters() if not torch.equal(p.detach(), before[n])}

        assert changed_after_update(50) == set()
        assert changed_after_update(150) == set(critic)
        assert changed_after_update(250) >= set(actor)
    finally:
        algo.stop()


# ---------------------------------------------------------------- training results, KS schedule
def test_ppo_train_reports_retention_metrics_and_ks_schedule(pretrained):
    algo = build("ppo", TERMS["ks"], pretrained)
    try:
        result = algo.train()
        learner_results = result["learners"][DEFAULT_MODULE_ID]
        assert {"retention_ks_loss", "retention_ks_coeff", "retention_ks_penalty"} <= set(learner_results)
        learner = algo.learner_group._learner

        def optimizer_steps() -> int:
            # Adam counts its steps per parameter: read it off an actor parameter
            module = learner.module[DEFAULT_MODULE_ID].unwrapped()
            parameter = dict(module.named_parameters())["pi.net.mlp.0.weight"]
            (optimizer,) = [o for _, o in learner.get_optimizers_for_module(DEFAULT_MODULE_ID)]
            return int(optimizer.state[parameter]["step"])

        steps = optimizer_steps()
        assert steps >= 2
        assert learner_results["retention_ks_coeff"] == pytest.approx(max(0.1, 5.0 * 0.5**steps))
        algo.train()
        assert optimizer_steps() > steps
        assert learner.retention_term.coeff == pytest.approx(max(0.1, 5.0 * 0.5 ** optimizer_steps()))
    finally:
        algo.stop()


# ---------------------------------------------------------------- EM
def test_sac_episodic_memory_is_protected_and_mixed_into_minibatches(pretrained):
    algo = build("sac", {"name": "em", "memory_size": 200}, pretrained, replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": 600})
    try:
        buffer = algo.local_replay_buffer
        assert isinstance(buffer, TransitionReplay)
        assert buffer.num_protected_timesteps == 200
        protected_obs = {tuple(np.round(o, 5)) for o in load_retention_data(pretrained["sac"]["data"])["obs"][:200]}
        for _ in range(4):  # 4 x 400 online steps into a 400-step FIFO
            buffer.add(algo.env_runner.sample(num_timesteps=400, random_actions=True))
        assert buffer.num_protected_timesteps == 200 and buffer.get_num_timesteps() == 400
        rows = buffer.sample_rows(num_minibatches=125, minibatch_size=32)
        from_memory = np.mean([tuple(np.round(o, 5)) in protected_obs for o in rows["obs"]])
        share = 200 / (200 + buffer.get_num_timesteps())
        assert abs(from_memory - share) < 5 * np.sqrt(share * (1 - share) / 4000)
        result = algo.train()  # the whole SAC loop runs on the mixed buffer
        assert "qf_loss" in result["learners"][DEFAULT_MODULE_ID]
    finally:
        algo.stop()


def test_sac_default_replay_is_uniform():
    assert RetentionSACConfig().replay_buffer_config["type"] == "EpisodeReplayBuffer"


# ---------------------------------------------------------------- config checks and serialisation
def test_retention_settings_survive_dict_round_trip(pretrained):
    art = pretrained["ppo"]
    config = base_config("ppo").retention(method=TERMS["bc"], pretrained_module_path=art["module"], retention_data_path=art["data"])
    as_dict = config.to_dict()
    restored = RetentionPPO.get_default_config().update_from_dict(as_dict)
    assert restored.learner_config_dict[RETENTION_CONFIG_KEY] == config.learner_config_dict[RETENTION_CONFIG_KEY]
    assert restored.learner_config_dict[RETENTION_CONFIG_KEY].method.buffer_size == 64
    assert isinstance(RetentionPPOConfig.from_dict(as_dict), RetentionPPOConfig)


def test_bad_retention_settings_fail_before_training(pretrained, tmp_path):
    art = pretrained["ppo"]
    with pytest.raises(ValueError, match="pretrained_module_path"):
        base_config("ppo").retention(method={"name": "finetune"})
    with pytest.raises(ValueError, match="retention_data_path"):
        base_config("ppo").retention(method={"name": "bc"}, pretrained_module_path=art["module"])
    with pytest.raises(ValueError, match="off-policy"):
        base_config("ppo").retention(method={"name": "em"}, pretrained_module_path=art["module"], retention_data_path=art["data"])
    with pytest.raises(ValueError, match="at least 10000"):
        base_config("ppo").retention(method={"name": "bc"}, pretrained_module_path=art["module"], retention_data_path=art["data"])
    data = {k: v for k, v in load_retention_data(art["data"]).items() if k != "next_obs"}
    save_retention_data(tmp_path / "no_next.npz", data)
    with pytest.raises(ValueError, match="next_obs"):
        base_config("sac").retention(method={"name": "em", "memory_size": 10}, pretrained_module_path=pretrained["sac"]["module"], retention_data_path=tmp_path / "no_next.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        base_config("ppo").retention(method={"name": "bc", "buffer_size": 10}, pretrained_module_path=art["module"], retention_data_path=tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="not an RLModule checkpoint"):
        base_config("ppo").retention(method={"name": "finetune"}, pretrained_module_path=tmp_path)
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="not a readable .npz"):
        base_config("ppo").retention(method={"name": "bc", "buffer_size": 10}, pretrained_module_path=art["module"], retention_data_path=tmp_path / "corrupt.npz")
    # scratch needs nothing
    base_config("ppo").retention(method={"name": "scratch"})


def test_collected_data_has_transition_keys_and_round_trips(pretrained, tmp_path):
    data = load_retention_data(pretrained["sac"]["data"])
    assert set(data) == {"obs", "actions", "rewards", "next_obs", "terminateds", "truncateds", "action_dist_inputs"}
    assert all(len(v) == 300 for v in data.values())
    assert data["actions"].shape == (300, 1) and np.abs(data["actions"]).max() <= 1.0  # normalised SAC actions
    assert data["action_dist_inputs"].shape == (300, 2)  # [μ, log σ] of the pre-squash Gaussian
    assert data["truncateds"][-1] or data["terminateds"][-1]  # the collection's end closes an episode
    # consecutive rows chain: next_obs[i] == obs[i+1] inside an episode
    inside = ~(data["terminateds"][:-1] | data["truncateds"][:-1])
    np.testing.assert_array_equal(data["next_obs"][:-1][inside], data["obs"][1:][inside])
    saved = save_retention_data(tmp_path / "copy.npz", data)
    assert set(load_retention_data(saved)) == set(data)
    with pytest.raises(ValueError, match=".npz"):
        save_retention_data(tmp_path / "copy.pkl", data)


def test_custom_linear_policy_module_gets_actor_pi_and_critic_vf(tmp_path):
    """ftcl's own RLModule (actor `pi`, critic `vf`) works with the anchors and the BC buffer."""
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from ftcl.models.linear_policy import LinearPolicyModule

    env = gym.make("CartPole-v1")
    spec = RLModuleSpec(module_class=LinearPolicyModule, observation_space=env.observation_space, action_space=env.action_space, model_config={})
    module = spec.build()
    theta_star = distinctive_weights(module)
    save_pi_star(module, tmp_path / "module")
    save_retention_data(tmp_path / "data.npz", collect_policy_data(module, env, num_transitions=200, seed=0))
    config = (
        base_config("ppo")
        .rl_module(rl_module_spec=RLModuleSpec(module_class=LinearPolicyModule, model_config={}))
        .retention(method={"name": "ewc", "fisher_batches": 2, "fisher_batch_size": 50, "fisher_labels": "argmax"},
                   pretrained_module_path=tmp_path / "module", retention_data_path=tmp_path / "data.npz")
    )
    algo = config.build_algo()
    try:
        learner = algo.learner_group._learner
        actor, critic = actor_and_critic(learner.module[DEFAULT_MODULE_ID].unwrapped())
        assert actor == ["pi.weight", "pi.bias"] and critic and all(n.startswith("vf") for n in critic)
        torch.testing.assert_close(learner.retention_term.anchor["pi.weight"], theta_star["pi.weight"])
        assert float(learner.retention_term.importance["pi.weight"].sum()) > 0
        result = algo.train()
        assert result["learners"][DEFAULT_MODULE_ID]["retention_ewc_loss"] >= 0.0
    finally:
        algo.stop()


def test_a_module_without_the_retention_policy_api_is_refused_with_its_name():
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    config = base_config("ppo").rl_module(rl_module_spec=RLModuleSpec(module_class=DefaultPPOTorchRLModule))
    with pytest.raises(Exception, match="DefaultPPOTorchRLModule.*RetentionPolicyAPI"):
        config.retention(method={"name": "scratch"}).build_algo()


# ---------------------------------------------------------------- fixes: critic penalty once, λ_t in the checkpoint
def test_sac_l2_critic_penalty_reaches_each_q_network_once(pretrained):
    """∂/∂φ of λ_c Σ(φ−φ*)² is 2λ_c(φ−φ*) for both Q-networks (RLlib shares p.grad across its
    per-optimizer backward passes: the whole penalty in both losses would double the first's)."""
    critic_coeff = 3.0
    algo = build("sac", {"name": "l2", "coeff": 0.0, "critic_coeff": critic_coeff}, pretrained)
    try:
        learner = algo.learner_group._learner
        drift_(learner, part="critic")
        batch = train_batch(algo, "sac")
        module = learner.module[DEFAULT_MODULE_ID].unwrapped()
        anchor = learner.retention_term.anchor
        with_penalty = gradients(learner, batch)
        learner.retention_term.critic_coeff = 0.0
        without_penalty = gradients(learner, batch)
        names = actor_and_critic(module)[1]
        assert any(n.startswith("qf_twin") for n in names) and any(n.startswith("qf.") for n in names)
        for name, parameter in module.named_parameters():
            if name in names:
                expected = 2 * critic_coeff * (parameter.detach() - anchor[name])
                torch.testing.assert_close(with_penalty[name] - without_penalty[name], expected, msg=name)
    finally:
        algo.stop()


def test_kickstarting_coefficient_survives_a_checkpoint(pretrained, tmp_path):
    algo = build("ppo", TERMS["ks"], pretrained)
    try:
        algo.train()
        decayed = algo.learner_group._learner.retention_term.coeff
        steps = algo.learner_group._learner.retention_term.num_optimizer_steps
        assert 0.1 < decayed < 5.0 and steps >= 2
        algo.save_to_path(tmp_path / "checkpoint")
    finally:
        algo.stop()
    resumed = build("ppo", TERMS["ks"], pretrained)
    try:
        assert resumed.learner_group._learner.retention_term.coeff == 5.0  # λ_0 before the restore
        resumed.restore_from_path(tmp_path / "checkpoint")
        term = resumed.learner_group._learner.retention_term
        assert term.coeff == pytest.approx(decayed) and term.num_optimizer_steps == steps
    finally:
        resumed.stop()


def test_sac_alpha_starts_from_pi_star_and_survives_a_checkpoint(pretrained, tmp_path):
    """α at fine-tuning start is π*'s (RLlib's initial_alpha is 1.0); RLlib's SAC learner does not
    checkpoint α, ftcl's does, so a resumed trial goes on with the α it had."""
    import math

    from ray.rllib.core import DEFAULT_MODULE_ID

    def alpha(algo) -> float:
        return float(torch.exp(algo.learner_group._learner.curr_log_alpha[DEFAULT_MODULE_ID]).item())

    algo = build("sac", {"name": "finetune"}, pretrained)
    try:
        assert alpha(algo) == pytest.approx(math.exp(SAC_LOG_ALPHA), rel=1e-6)
        algo.train()
        trained = alpha(algo)
        assert trained != pytest.approx(math.exp(SAC_LOG_ALPHA), rel=1e-6)  # α's optimizer stepped
        algo.save_to_path(tmp_path / "checkpoint")
    finally:
        algo.stop()
    resumed = build("sac", {"name": "finetune"}, pretrained)
    try:
        resumed.restore_from_path(tmp_path / "checkpoint")
        assert alpha(resumed) == pytest.approx(trained, rel=1e-6)
    finally:
        resumed.stop()
