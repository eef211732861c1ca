"""Log-likelihood of π*'s stored actions (paper Fig. 8): the metric, the suite's rows, the spec checks."""
from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchCategorical
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from ftcl.envs.registry import ENVS
from ftcl.envs.robotic_sequence import META_WORLD_OBS_DIM
from ftcl.evaluation.likelihood import select_rows, stored_action_log_likelihood, suite_rows
from ftcl.models.multihead_sac import MultiHeadSACModule
from ftcl.spec import REPO_ROOT, SpecError, load_spec

NUM_STAGES = 4  # the default RoboticSequence: hammer, push, peg-unplug-side, push-wall
OBS_DIM = META_WORLD_OBS_DIM + NUM_STAGES + 1
ACTION_DIM = 4
APPLE = REPO_ROOT / "tune_configs/toys/apple_retrieval.yaml"


def observations_at(stages: list[int], seed: int = 0) -> np.ndarray:
    """RoboticSequence-shaped observations [39-d | one-hot(stage) | t/T], one row per stage given."""
    rng = np.random.default_rng(seed)
    obs = np.zeros((len(stages), OBS_DIM), dtype=np.float32)
    obs[:, :META_WORLD_OBS_DIM] = rng.normal(size=(len(stages), META_WORLD_OBS_DIM))
    obs[np.arange(len(stages)), META_WORLD_OBS_DIM + np.asarray(stages)] = 1.0
    obs[:, -1] = rng.uniform(size=len(stages))
    return obs


@pytest.fixture(scope="module")
def module() -> MultiHeadSACModule:
    """A small multi-head SAC actor with σ = e^-2 on every head (as a trained π* is: narrow)."""
    torch.manual_seed(0)
    low = np.full(OBS_DIM, -np.inf, dtype=np.float32)
    high = np.full(OBS_DIM, np.inf, dtype=np.float32)
    low[META_WORLD_OBS_DIM:], high[META_WORLD_OBS_DIM:] = 0.0, 1.0
    built = RLModuleSpec(
        module_class=MultiHeadSACModule,
        observation_space=gym.spaces.Box(low, high, dtype=np.float32),
        action_space=gym.spaces.Box(-1.0, 1.0, shape=(ACTION_DIM,), dtype=np.float32),
        model_config={"hidden_layers": 2, "hidden_size": 32},
    ).build()
    with torch.no_grad():
        for head in built.pi.heads:  # rows [A:2A] emit log σ: make it the constant −2
            head.weight[ACTION_DIM:] = 0.0
            head.bias[ACTION_DIM:] = -2.0
    return built


def distribution_inputs(module, observations: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = module.forward_exploration({Columns.OBS: torch.as_tensor(observations)})
    return out[Columns.ACTION_DIST_INPUTS].numpy().astype(np.float64)


def test_own_mean_actions_are_more_likely_than_random_actions(module):
    observations = observations_at([k % NUM_STAGES for k in range(64)])
    mean, _ = np.split(distribution_inputs(module, observations), 2, axis=-1)
    own = stored_action_log_likelihood(module, observations, np.tanh(mean).astype(np.float32))
    random = np.random.default_rng(1).uniform(-1, 1, size=(64, ACTION_DIM)).astype(np.float32)
    assert np.isfinite(own)
    assert own > stored_action_log_likelihood(module, observations, random) + 10.0


def test_matches_a_hand_computed_squashed_gaussian_log_prob(module):
    observation = observations_at([2])
    action = np.array([[0.3, -0.7, 0.95, -0.1]], dtype=np.float32)
    mean, log_std = np.split(distribution_inputs(module, observation)[0], 2)
    # a = tanh(u), u ~ N(μ, σ²):  log π(a|s) = Σ_j [log N(u_j; μ_j, σ_j) − log(1 − a_j²)]
    u = np.arctanh(action[0].astype(np.float64))
    sigma = np.exp(log_std)
    gaussian = -0.5 * ((u - mean) / sigma) ** 2 - np.log(sigma) - 0.5 * math.log(2 * math.pi)
    expected = float(np.sum(gaussian - np.log(1.0 - action[0].astype(np.float64) ** 2)))
    assert stored_action_log_likelihood(module, observation, action) == pytest.approx(expected, rel=1e-4)


def test_actions_at_the_bounds_stay_finite(module):
    observations = observations_at([3, 3])
    actions = np.array([[1.0, -1.0, 1.0, 0.0], [-1.0, 1.0, 0.0, 0.5]], dtype=np.float32)
    assert np.isfinite(stored_action_log_likelihood(module, observations, actions))


def test_categorical_policies_use_integer_actions():
    class Softmax(torch.nn.Module):
        """A stand-in RLModule: fixed logits log(0.2), log(0.8) for every state."""

        def __init__(self):
            super().__init__()
            self.logits = torch.nn.Parameter(torch.log(torch.tensor([0.2, 0.8])))

        def forward_exploration(self, batch):
            return {Columns.ACTION_DIST_INPUTS: self.logits.expand(len(batch[Columns.OBS]), 2)}

        def get_exploration_action_dist_cls(self):
            return TorchCategorical

    ell = stored_action_log_likelihood(Softmax(), np.zeros((4, 3), np.float32), np.array([0, 1, 1, 1]))
    assert ell == pytest.approx((math.log(0.2) + 3 * math.log(0.8)) / 4, rel=1e-6)


def test_suite_mask_picks_only_the_suites_stage_rows():
    stages = [0, 3, 1, 3, 2, 3, 0, 2]
    observations = observations_at(stages)
    entry = ENVS["robotic_sequence"]
    options = entry.validate_options({})
    mask = entry.suite_state_mask(options, "stage_3_push-wall", observations)
    assert mask.tolist() == [stage == 3 for stage in stages]
    assert entry.suite_state_mask(options, "full", observations).all()
    data = {"obs": observations, "actions": np.arange(len(stages))[:, None].repeat(ACTION_DIM, 1)}
    rows = suite_rows(data, "robotic_sequence", options, ["stage_3_push-wall", "stage_1_push"], max_rows=2)
    obs3, actions3 = rows["stage_3_push-wall"]
    assert (obs3[:, META_WORLD_OBS_DIM + 3] == 1.0).all() and len(obs3) == 2
    assert actions3[:, 0].tolist() == [1, 5]  # evenly spaced over rows 1, 3, 5: the first and last
    assert len(rows["stage_1_push"][0]) == 1
    # envs without a mask use every row
    assert ENVS["apple_retrieval"].suite_state_mask({}, "far", np.zeros((5, 2))).all()


def test_select_rows_caps_deterministically():
    mask = np.arange(10_000) % 3 == 0
    rows = select_rows(mask, max_rows=100)
    assert len(rows) == 100 and mask[rows].all()
    assert np.array_equal(rows, select_rows(mask, max_rows=100))
    assert rows[0] == 0 and rows[-1] == np.flatnonzero(mask)[-1]


def test_spec_rejects_an_unknown_log_likelihood_suite():
    with pytest.raises(SpecError, match=r"log_likelihood_suites: unknown suite 'near'.*allowed: far, full"):
        load_spec(APPLE, ["evaluation.log_likelihood_suites=[near]"])
    spec = load_spec(APPLE, ["evaluation.log_likelihood_suites=[far]"])
    assert spec.evaluation.log_likelihood_suites == ["far"] and spec.evaluation.active


def test_spec_needs_pretrained_data_for_log_likelihoods():
    no_pi_star = ["pretrained={}", "methods=[{name: scratch}]", "grid={}"]
    assert load_spec(APPLE, no_pi_star).evaluation.log_likelihood_suites == []
    with pytest.raises(SpecError, match=r"log_likelihood_suites: needs π\*'s stored data"):
        load_spec(APPLE, [*no_pi_star, "evaluation.log_likelihood_suites=[far]"])
