"""Linear CKA against θ* (paper Fig. 20): the maths on small arrays, which layers of which networks
are compared, and 1.0 for every layer at env step 0 of a real fine-tuning trial's learner."""
from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from ray.rllib.core.rl_module.rl_module import RLModule, RLModuleSpec
from torch import nn

from ftcl.algorithms.pi_star import save_pi_star
from ftcl.data.retention_data import save_retention_data
from ftcl.envs.robotic_sequence import META_WORLD_OBS_DIM
from ftcl.evaluation.cka import CKAProbe, find_networks, hidden_layer_outputs, layer_activations, linear_cka
from ftcl.models.multihead_sac import MultiHeadSACModule

NUM_STAGES = 4
OBS_DIM = META_WORLD_OBS_DIM + NUM_STAGES + 1
ACTION_DIM = 4


def random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


# ---------------------------------------------------------------- the maths
def test_identical_representations_have_cka_one():
    x = np.random.default_rng(0).normal(size=(200, 16))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_invariant_to_orthogonal_transforms_isotropic_scaling_and_translation():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12))  # correlated features
    y = rng.normal(size=(300, 12)) + 0.5 * x
    reference = linear_cka(x, y)
    q = random_orthogonal(12, rng)
    assert linear_cka(x, 7.5 * x @ q + 3.0) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x @ q, y) == pytest.approx(reference, rel=1e-10)
    assert linear_cka(x, 0.01 * y - 4.0) == pytest.approx(reference, rel=1e-10)
    assert linear_cka(y, x) == pytest.approx(reference, rel=1e-10)  # symmetric


def test_not_invariant_to_anisotropic_scaling():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 8))
    assert linear_cka(x, x * np.array([10.0, 1, 1, 1, 1, 1, 1, 1])) < 0.9


def test_unrelated_representations_have_low_cka_and_partial_relation_in_between():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1000, 10))
    unrelated = linear_cka(x, rng.normal(size=(1000, 10)))
    noisy = linear_cka(x, x + rng.normal(size=(1000, 10)))
    assert unrelated < 0.05
    assert unrelated < noisy < 1.0 and noisy > 0.4


def test_equals_the_hsic_form_with_linear_kernels():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(50, 6)), rng.normal(size=(50, 9)) + rng.normal(size=(50, 1))
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n

    def hsic(k, l):  # HSIC(K, L) = tr(KHLH) / (n − 1)²
        return np.trace(k @ h @ l @ h) / (n - 1) ** 2

    k, l = x @ x.T, y @ y.T
    assert linear_cka(x, y) == pytest.approx(hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l)), rel=1e-10)


def test_constant_representation_gives_nan():
    x = np.random.default_rng(5).normal(size=(20, 3))
    assert np.isnan(linear_cka(x, np.ones((20, 4))))


# ---------------------------------------------------------------- layers and networks
def sac_module(hidden_layers: int = 3, hidden_size: int = 16, inference_only: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    low = np.full(OBS_DIM, -np.inf, dtype=np.float32)
    high = np.full(OBS_DIM, np.inf, dtype=np.float32)
    low[META_WORLD_OBS_DIM:], high[META_WORLD_OBS_DIM:] = 0.0, 1.0
    return RLModuleSpec(
        module_class=MultiHeadSACModule,
        observation_space=gym.spaces.Box(low, high, dtype=np.float32),
        action_space=gym.spaces.Box(-1.0, 1.0, shape=(ACTION_DIM,), dtype=np.float32),
        model_config={"hidden_layers": hidden_layers, "hidden_size": hidden_size},
        inference_only=inference_only,
    ).build()


def stored_rows(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = np.zeros((n, OBS_DIM), dtype=np.float32)
    obs[:, :META_WORLD_OBS_DIM] = rng.normal(size=(n, META_WORLD_OBS_DIM))
    obs[np.arange(n), META_WORLD_OBS_DIM + rng.integers(2, 4, size=n)] = 1.0
    obs[:, -1] = rng.uniform(size=n)
    return obs, rng.uniform(-1, 1, size=(n, ACTION_DIM)).astype(np.float32)


def test_layers_are_the_outputs_after_each_hidden_layers_nonlinearity():
    module = sac_module(hidden_layers=3)
    layers = hidden_layer_outputs(module.pi_encoder)
    assert [type(layer) for layer in layers] == [nn.Tanh, nn.LeakyReLU, nn.LeakyReLU]  # LayerNorm → tanh first
    networks = find_networks(module)
    assert list(networks) == ["actor", "critic", "critic_twin"]
    assert all(len(layers) == 3 for layers in networks.values())
    assert list(find_networks(sac_module(inference_only=True))) == ["actor"]  # no critics: skipped


def test_activations_of_each_network_on_its_inputs():
    module = sac_module(hidden_layers=2, hidden_size=8)
    obs, actions = stored_rows(10)
    activations = layer_activations(module, obs, actions)
    assert {name: [a.shape for a in layers] for name, layers in activations.items()} == {
        name: [(10, 8), (10, 8)] for name in ("actor", "critic", "critic_twin")}
    with torch.no_grad():  # the critic's first layer reads [s, a]
        expected = torch.tanh(module.qf_encoder.layers[1](module.qf_encoder.layers[0](
            torch.cat([torch.as_tensor(obs), torch.as_tensor(actions)], dim=-1))))
    np.testing.assert_allclose(activations["critic"][0], expected.numpy(), rtol=1e-5, atol=1e-6)
    assert list(layer_activations(module, obs, actions, ["critic_twin"])) == ["critic_twin"]


def test_ppo_modules_compare_actor_and_value_encoders():
    from ray.rllib.algorithms.ppo import PPOConfig

    env = gym.make("CartPole-v1")
    config = PPOConfig().rl_module(model_config={"fcnet_hiddens": [8, 8], "vf_share_layers": False})
    spec = config.get_rl_module_spec(env=env)
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    module = spec.build()
    probe = CKAProbe(module, np.random.default_rng(0).normal(size=(32, 4)), np.zeros((32, 1)))
    assert probe.networks == ["actor", "critic"]
    metrics = probe.metrics_of(module)
    assert sorted(metrics) == [f"analysis/cka/{n}/layer_{k}" for n in ("actor", "critic") for k in (0, 1)]
    assert all(value == pytest.approx(1.0, abs=1e-6) for value in metrics.values())


def test_probe_is_one_for_theta_star_and_drops_from_the_changed_layer_on():
    reference = sac_module(hidden_layers=3, hidden_size=32)
    obs, actions = stored_rows(200)
    probe = CKAProbe(reference, obs, actions)
    metrics = probe.metrics_of(reference)
    assert len(metrics) == 9 and all(value == pytest.approx(1.0, abs=1e-6) for value in metrics.values())
    changed = sac_module(hidden_layers=3, hidden_size=32)
    changed.load_state_dict(reference.state_dict())
    with torch.no_grad():
        changed.pi_encoder.layers[-2].weight.copy_(torch.randn_like(changed.pi_encoder.layers[-2].weight))
    metrics = probe.metrics_of(changed)
    assert metrics["analysis/cka/actor/layer_0"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["analysis/cka/actor/layer_2"] < 0.9
    assert metrics["analysis/cka/critic/layer_2"] == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------- a real trial at env step 0
@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield
    ray.shutdown()


def test_cka_is_one_for_every_layer_at_env_step_0_of_finetuning(ray_session, tmp_path):
    """θ* from π*'s checkpoint vs the learner's module (with critics) right after π* is loaded."""
    from ftcl.envs.registry import ENVS
    from ftcl.evaluation.analyses import FineTuningAnalyses
    from ftcl.plan import TrialPlan
    from ftcl.spec import REPO_ROOT, load_spec
    from ftcl.trainable import FtclTrainable
    from ftcl.trial_config import build_algorithm_config, register_envs

    register_envs()
    model = {"hidden_layers": 2, "hidden_size": 16}
    entry = ENVS["robotic_sequence"]
    preset = yaml.safe_load((REPO_ROOT / "tune_configs/presets/sac_robotic_sequence.yaml").read_text())
    options = entry.validate_options(preset["env"]["options"])
    env = entry.make(options)
    torch.manual_seed(0)
    pi_star = RLModuleSpec(module_class=MultiHeadSACModule, observation_space=env.observation_space,
                           action_space=env.action_space, model_config=model).build()
    env.close()
    module_path = save_pi_star(pi_star, tmp_path / "module", log_alpha=-1.0)
    obs, actions = stored_rows(300)
    n = len(obs)
    data_path = save_retention_data(tmp_path / "data.npz", {
        "obs": obs, "actions": actions, "rewards": np.zeros(n, np.float32), "next_obs": obs,
        "terminateds": np.zeros(n, bool), "truncateds": np.zeros(n, bool),
        "action_dist_inputs": np.zeros((n, 2 * ACTION_DIM), np.float32)})
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "cka_step_0", "presets": ["sac_robotic_sequence"],
        "pretrained": {"module": str(module_path), "data": str(data_path)},
        "algorithm": {"model_options": model, "num_env_runners": 0},
        "methods": [{"name": "finetune"}], "seeds": [0], "budget": {"env_steps": 100},
        "evaluation": {"suites": [], "log_likelihood_suites": ["stage_3_push-wall"], "cka": True}}))
    trial = load_spec(spec_path)
    plan = TrialPlan(key="finetune__seed0", stage="finetune", method="finetune", seed=0, variant_index=0, variant={})
    algo = build_algorithm_config(trial, plan, module_path, data_path).build_algo()
    try:
        analyses = FineTuningAnalyses(env_name="robotic_sequence", env_options=options,
                                      log_likelihood_suites=["stage_3_push-wall"], cka=True,
                                      module_path=module_path, data_path=data_path)
        trainable = SimpleNamespace(algo=algo)  # the trainable's own path to the learner's module
        metrics = analyses.evaluate(0, algo.get_module(),
                                    lambda *args: FtclTrainable._learner_activations(trainable, *args))
    finally:
        algo.stop()
    cka = {k: v for k, v in metrics.items() if k.startswith("analysis/cka/")}
    assert sorted(cka) == [f"analysis/cka/{n}/layer_{k}" for n in ("actor", "critic", "critic_twin") for k in (0, 1)]
    assert all(value == pytest.approx(1.0, abs=1e-5) for value in cka.values()), cka
    assert np.isfinite(metrics["analysis/log_likelihood_median/stage_3_push-wall"])
    assert analyses.record is not None and analyses.record.env_steps == [0]
    assert isinstance(RLModule.from_checkpoint(str(module_path)), MultiHeadSACModule)
