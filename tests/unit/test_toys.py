"""Tests of the paper's toys: the AppleRetrieval env and the two-state MDP (App. A)."""
from __future__ import annotations

import os

import numpy as np
import pydantic
import pytest
from gymnasium.utils.env_checker import check_env

from ftcl.envs.registry import get_env_entry
from ftcl.envs.toys import (
    MOVE_LEFT,
    MOVE_RIGHT,
    AppleRetrievalEnv,
    Options,
    TwoStateMDPOptions,
    global_optimum,
    gradient_ascent,
    stay_probability,
    two_state_mdp_trainable,
    value_s0,
    variant_value,
)

# ------------------------------------------------------------------ AppleRetrieval


def run_actions(env: AppleRetrievalEnv, actions: list[int]):
    """Step through `actions`; return the list of (obs, reward, terminated, truncated, info)."""
    return [env.step(a) for a in actions]


def test_options_reject_bad_values_with_field_names() -> None:
    with pytest.raises(pydantic.ValidationError, match="apple_distance"):
        Options(apple_distance=0)
    with pytest.raises(pydantic.ValidationError, match="observation_scale"):
        Options(observation_scale=0.0)
    with pytest.raises(pydantic.ValidationError, match="start_phase"):
        Options(start_phase=3)
    with pytest.raises(pydantic.ValidationError, match="extra"):
        Options(apple_distance=5, colour="red")
    with pytest.raises(pydantic.ValidationError, match="too small for apple_distance=60"):
        Options(apple_distance=60, max_steps=100)


def test_registry_builds_env_and_suites_override_the_start() -> None:
    entry = get_env_entry("apple_retrieval")
    options = {"apple_distance": 7, "observation_scale": 0.5}
    full = entry.make({**options, **entry.suites["full"]})
    far = entry.make({**options, **entry.suites["far"]})
    obs_full, info_full = full.reset(seed=0)
    obs_far, info_far = far.reset(seed=0)
    assert obs_full.tolist() == [-0.5] and info_full == {"success": False, "phase": 1, "position": 0}
    assert obs_far.tolist() == [0.5] and info_far == {"success": False, "phase": 2, "position": 7}
    creator = entry.creator()
    assert isinstance(creator({"apple_distance": 3}), AppleRetrievalEnv)


def test_passes_gymnasium_env_checker() -> None:
    check_env(AppleRetrievalEnv(apple_distance=4, observation_scale=2.0), skip_render_check=True)


def test_optimal_episode_collects_2m_reward_and_succeeds_on_last_step() -> None:
    env = AppleRetrievalEnv(apple_distance=5, observation_scale=0.1)
    obs, _ = env.reset(seed=1)
    assert obs.dtype == np.float32 and obs.shape == (1,)
    assert obs[0] == pytest.approx(-0.1)
    steps = run_actions(env, [MOVE_RIGHT] * 5 + [MOVE_LEFT] * 5)
    rewards = [s[1] for s in steps]
    assert rewards == [1.0] * 10
    # the observation flips to +c on the step that reaches the apple
    observations = [float(s[0][0]) for s in steps]
    assert observations[:4] == pytest.approx([-0.1] * 4)
    assert observations[4:] == pytest.approx([0.1] * 6)
    assert [s[4]["position"] for s in steps] == [1, 2, 3, 4, 5, 4, 3, 2, 1, 0]
    assert [s[4]["phase"] for s in steps] == [1, 1, 1, 1, 2, 2, 2, 2, 2, 2]
    assert [s[4]["success"] for s in steps] == [False] * 9 + [True]
    assert [s[2] for s in steps] == [False] * 9 + [True]
    assert not any(s[3] for s in steps)


def test_wrong_moves_cost_one_and_home_clips_position() -> None:
    env = AppleRetrievalEnv(apple_distance=3)
    env.reset()
    obs, reward, terminated, truncated, info = env.step(MOVE_LEFT)
    assert (reward, info["position"], info["phase"], terminated) == (-1.0, 0, 1, False)
    # in Phase 2 a step right is wrong and walks past the apple (no clip above)
    run_actions(env, [MOVE_RIGHT] * 3)
    _, reward, _, _, info = env.step(MOVE_RIGHT)
    assert (reward, info["position"], info["phase"]) == (-1.0, 4, 2)


def test_truncates_at_max_steps_without_success() -> None:
    env = AppleRetrievalEnv(apple_distance=5, max_steps=12)
    env.reset()
    steps = run_actions(env, [MOVE_LEFT] * 12)
    assert [s[3] for s in steps] == [False] * 11 + [True]
    assert not any(s[2] for s in steps)
    assert not any(s[4]["success"] for s in steps)
    assert sum(s[1] for s in steps) == -12.0


def test_far_start_needs_only_m_left_steps() -> None:
    env = AppleRetrievalEnv(apple_distance=4, observation_scale=2.0, start_phase=2)
    obs, info = env.reset()
    assert obs.tolist() == [2.0] and info["position"] == 4
    steps = run_actions(env, [MOVE_LEFT] * 4)
    assert steps[-1][2] and steps[-1][4]["success"]
    assert sum(s[1] for s in steps) == 4.0


def test_is_deterministic_and_reset_restores_the_start() -> None:
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, size=40).tolist()
    env = AppleRetrievalEnv(apple_distance=6)
    env.reset(seed=3)
    first = [(s[0].tolist(), s[1], s[2], s[3], s[4]) for s in run_actions(env, actions)]
    env.reset(seed=99)
    second = [(s[0].tolist(), s[1], s[2], s[3], s[4]) for s in run_actions(env, actions)]
    assert first == second


def test_rejects_actions_outside_the_space() -> None:
    env = AppleRetrievalEnv()
    env.reset()
    with pytest.raises(ValueError, match="0 \\(left\\) or 1 \\(right\\)"):
        env.step(2)


# ------------------------------------------------------------------ two-state MDP


def bellman_value_s0(theta: float, f: float, gamma: float, r0: float, r1: float) -> float:
    """v(s0) from the Bellman equations of the two-state chain, by a linear solve.

    v0 = θ(1 + γ v1) + (1-θ)(r0 + γ v0);  v1 = f(1 + γ v1) + (1-f)(r1 + γ v0).
    """
    transition = np.array([[1.0 - theta, theta], [1.0 - f, f]])
    expected_reward = np.array([theta * 1.0 + (1.0 - theta) * r0, f * 1.0 + (1.0 - f) * r1])
    values = np.linalg.solve(np.eye(2) - gamma * transition, expected_reward)
    return float(values[0])


@pytest.mark.parametrize("theta", [0.0, 0.1, 0.37, 0.8, 1.0])
@pytest.mark.parametrize("f", [0.0, 0.45, 1.0])
@pytest.mark.parametrize(("gamma", "r0", "r1"), [(0.9, 0.0, -1.0), (0.5, 0.3, 2.0), (0.99, -1.0, 0.7)])
def test_closed_form_value_matches_bellman_solution(theta, f, gamma, r0, r1) -> None:
    assert value_s0(theta, f, gamma, r0, r1) == pytest.approx(
        bellman_value_s0(theta, f, gamma, r0, r1), rel=1e-9, abs=1e-9
    )


def test_stay_probabilities_match_figure_9() -> None:
    assert stay_probability("coverage_gap", 0.0) == 1.0  # pre-trained: stays in s1 forever
    assert stay_probability("coverage_gap", 0.25) == pytest.approx(0.5)
    assert stay_probability("coverage_gap", 0.5) == pytest.approx(0.0)
    assert stay_probability("coverage_gap", 1.0) == pytest.approx(1.0)
    # ε = 0.5: slope -0.5/0.75 until θ = 0.75, continuous there (f = 0.5)
    assert stay_probability("coverage_gap", 0.75, epsilon=0.5) == pytest.approx(0.5)
    assert stay_probability("imperfect_cloning", 0.5) == 0.0
    assert stay_probability("imperfect_cloning", 0.0) == stay_probability("imperfect_cloning", 1.0) == 1.0


def test_coverage_gap_fine_tuning_gets_stuck_at_one_ninth() -> None:
    trajectory = gradient_ascent("coverage_gap", theta_init=0.0, learning_rate=1e-3, steps=2000)
    step, theta, value = trajectory[-1]
    assert step == 2000 and len(trajectory) == 2001
    assert trajectory[0][1:] == (0.0, 0.0)
    assert theta == pytest.approx(1 / 9, abs=1e-4)
    assert value == pytest.approx(20 / 9, abs=1e-3)  # 2.22
    assert variant_value("coverage_gap", 1.0) == pytest.approx(10.0)
    best_theta, best_value = global_optimum("coverage_gap")
    assert (best_theta, best_value) == (pytest.approx(1.0), pytest.approx(10.0))
    # values never decrease along the ascent
    values = [v for _, _, v in trajectory]
    assert all(b >= a - 1e-9 for a, b in zip(values, values[1:]))


# our reward choice for the imperfect-cloning panel (paper's values unknown)
CLONING_REWARDS = {"r0": 0.99, "r1": 0.9}


def test_imperfect_cloning_perturbed_optimum_drifts_to_worse_local_optimum() -> None:
    best_theta, best_value = global_optimum("imperfect_cloning", **CLONING_REWARDS)
    assert best_theta == pytest.approx(1.0) and best_value == pytest.approx(10.0)
    *_, (_, theta, value) = gradient_ascent("imperfect_cloning", 1.0 - 0.5, **CLONING_REWARDS)
    assert theta == pytest.approx(0.0234, abs=1e-3)
    assert value == pytest.approx(9.909, abs=1e-3)
    assert value < best_value - 0.05
    # a small perturbation is inside θ = 1's basin and comes back
    *_, (_, theta_small, value_small) = gradient_ascent(
        "imperfect_cloning", 1.0 - 0.05, **CLONING_REWARDS
    )
    assert theta_small == 1.0 and value_small == pytest.approx(10.0)


@pytest.mark.parametrize("r0", [0.0, 0.5, 0.9, 0.99, 1.0])
@pytest.mark.parametrize("r1", [-1.0, 0.0, 0.5, 0.9])
def test_imperfect_cloning_basin_of_theta_one_is_wide_when_r0_at_most_one(r0, r1) -> None:
    """With r0 <= 1 the basin of θ = 1 reaches below θ = 0.6 (see TwoStateMDPOptions)."""
    *_, (_, theta, _) = gradient_ascent("imperfect_cloning", 0.6, r0=r0, r1=r1, steps=3000)
    assert theta == 1.0


def test_two_state_options_validate() -> None:
    defaults = TwoStateMDPOptions()
    assert (defaults.gamma, defaults.r0, defaults.r1, defaults.epsilon) == (0.9, 0.0, -1.0, 1.0)
    with pytest.raises(pydantic.ValidationError, match="variant"):
        TwoStateMDPOptions(variant="banana")
    with pytest.raises(pydantic.ValidationError, match="epsilon"):
        TwoStateMDPOptions(epsilon=1.5)
    with pytest.raises(pydantic.ValidationError, match="gamma"):
        TwoStateMDPOptions(gamma=1.0)
    with pytest.raises(pydantic.ValidationError, match="extra"):
        TwoStateMDPOptions(learning_rat=0.1)


@pytest.mark.slow
def test_two_state_trainable_runs_under_ray_tune(tmp_path) -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import tune

    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        tuner = tune.Tuner(
            two_state_mdp_trainable,
            param_space={
                "variant": "imperfect_cloning",
                "theta_init": 1.0,
                "perturbation": tune.grid_search([-0.05, -0.5]),
                "steps": 2000,
                "report_every": 200,
                **CLONING_REWARDS,
            },
            run_config=tune.RunConfig(storage_path=str(tmp_path), name="two_state", verbose=0),
        )
        results = tuner.fit()
    finally:
        ray.shutdown()
    assert results.num_errors == 0
    frame = results.get_dataframe().sort_values("config/perturbation")
    assert frame["gradient_step"].tolist() == [2000, 2000]
    assert frame["theta"].tolist() == pytest.approx([0.0234, 1.0], abs=1e-3)
    assert frame["value_s0"].tolist() == pytest.approx([9.909, 10.0], abs=1e-3)
    assert frame["global_optimum_value"].tolist() == pytest.approx([10.0, 10.0])
    # 11 reports per trial: steps 0, 200, ..., 2000
    histories = [r.metrics_dataframe for r in results]
    assert sorted(len(h) for h in histories) == [11, 11]
