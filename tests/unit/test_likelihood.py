"""Log-likelihood of π*'s stored actions (paper Fig. 8): the metric, the suite's rows, the spec checks."""
from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import fnmatch
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
from ftcl.evaluation.likelihood import (
    log_likelihood_metrics,
    select_rows,
    stored_action_log_likelihood,
    stored_action_log_likelihoods,
    suite_rows,
)
from ftcl.evaluation.state_records import StateRecord, pca_2d, read_state_record
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


# ---------------------------------------------------------------- per-state values (Fig. 8 as drawn)
def test_per_state_values_average_to_the_mean(module):
    observations = observations_at([k % NUM_STAGES for k in range(32)])
    actions = np.random.default_rng(2).uniform(-1, 1, size=(32, ACTION_DIM)).astype(np.float32)
    values = stored_action_log_likelihoods(module, observations, actions)
    assert values.shape == (32,) and values.dtype == np.float64
    assert values.mean() == pytest.approx(stored_action_log_likelihood(module, observations, actions), rel=1e-5)
    assert stored_action_log_likelihoods(module, observations[:0], actions[:0]).shape == (0,)


def test_quantiles_are_not_dominated_by_a_few_collapsed_states():
    values = np.concatenate([np.linspace(0.0, 10.0, 99), [-1e12]])
    metrics = log_likelihood_metrics("stage_3_push-wall", values)
    assert sorted(metrics) == sorted(
        ["analysis/log_likelihood/stage_3_push-wall"]
        + [f"analysis/log_likelihood_{q}/stage_3_push-wall" for q in ("q10", "q25", "median", "q75", "q90")])
    assert metrics["analysis/log_likelihood/stage_3_push-wall"] < -1e9  # the mean: one state dominates
    assert metrics["analysis/log_likelihood_median/stage_3_push-wall"] == pytest.approx(np.median(values))
    assert 0.0 < metrics["analysis/log_likelihood_q10/stage_3_push-wall"] < metrics[
        "analysis/log_likelihood_q90/stage_3_push-wall"] < 10.0
    # the dashboard's mean glob does not pick up the quantiles
    assert fnmatch.filter(metrics, "analysis/log_likelihood/stage_*") == ["analysis/log_likelihood/stage_3_push-wall"]
    assert all(np.isnan(v) for v in log_likelihood_metrics("far", np.zeros(0)).values())


def test_pca_is_deterministic_and_keeps_the_main_directions():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(500, 2)) * [5.0, 2.0]
    rotation = np.linalg.qr(rng.normal(size=(6, 6)))[0][:, :2]
    observations = latent @ rotation.T + 0.01 * rng.normal(size=(500, 6)) + 3.0
    xy, explained = pca_2d(observations)
    again, _ = pca_2d(observations.copy())
    np.testing.assert_array_equal(xy, again)
    assert xy.shape == (500, 2) and explained.sum() > 0.99 and explained[0] > explained[1]
    assert abs(np.corrcoef(xy[:, 0], latent[:, 0])[0, 1]) > 0.99
    assert pca_2d(observations[:1])[0].shape == (1, 2)  # one state: no second component, zeros


def test_state_record_round_trip_and_resumed_evaluations_replace_later_ones(tmp_path):
    rows = {"stage_2_peg-unplug-side": np.array([0, 2, 4]), "stage_3_push-wall": np.array([1, 3])}
    observations = {suite: np.random.default_rng(len(r)).normal(size=(len(r), 5)) for suite, r in rows.items()}
    record = StateRecord.start(rows, observations)
    for step in (0, 1000, 2000):
        record.add(step, {suite: np.full(len(r), -float(step)) for suite, r in rows.items()})
    record.add(1000, {suite: np.full(len(r), 7.0) for suite, r in rows.items()})  # resumed after 1000
    path = record.save(tmp_path / "analysis" / "state_log_likelihood.npz")
    loaded = read_state_record(path)
    assert loaded.env_steps == [0, 1000] and list(loaded.suites) == list(rows)
    matrix = loaded.matrix("stage_3_push-wall")
    assert matrix.shape == (2, 2) and matrix.dtype == np.float32 and matrix[1].tolist() == [7.0, 7.0]
    np.testing.assert_array_equal(loaded.suites["stage_2_peg-unplug-side"].rows, [0, 2, 4])
    np.testing.assert_array_equal(loaded.suites["stage_3_push-wall"].xy, record.suites["stage_3_push-wall"].xy)
    with pytest.raises(ValueError, match="has 2 states"):
        record.add(3000, {"stage_2_peg-unplug-side": np.zeros(3), "stage_3_push-wall": np.zeros(5)})
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="state record .*broken.npz.* is unreadable"):
        read_state_record(tmp_path / "broken.npz")


def test_a_restored_trial_continues_its_checkpoints_record(tmp_path):
    from ftcl.evaluation.analyses import FineTuningAnalyses

    def analyses():
        return FineTuningAnalyses(env_name="robotic_sequence", env_options={}, log_likelihood_suites=["far"],
                                  cka=False, module_path=None, data_path=None)

    before = analyses()
    assert before.save_record(tmp_path / "none.npz") is None  # nothing evaluated yet: nothing written
    before.record = StateRecord.start({"far": np.arange(3)}, {"far": np.eye(3)})
    before.record.add(0, {"far": np.ones(3)})
    before.save_record(tmp_path / "checkpoint" / "state_log_likelihood.npz")
    after = analyses()
    after.restore_record(tmp_path / "checkpoint" / "state_log_likelihood.npz")
    after.restore_record(tmp_path / "elsewhere.npz")  # absent: keeps what it has
    assert after.record is not None and after.record.env_steps == [0]
