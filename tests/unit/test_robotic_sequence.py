"""RoboticSequence on the real Meta-World 3.1.1 simulator: stage logic of paper Algorithm 1,
reward augmentation, observation features, seeding, FAR suites and option validation.

Stages are driven to real success by Meta-World's own scripted expert policies
(`metaworld.policies.ENV_POLICY_MAP`), which read the 39-d Meta-World part of our observation.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from metaworld.policies import ENV_POLICY_MAP
from pydantic import ValidationError

from ftcl.envs.registry import get_env_entry
from ftcl.envs.robotic_sequence import (
    DEFAULT_STAGES,
    META_WORLD_OBS_DIM,
    Options,
    RoboticSequenceEnv,
    evaluation_suites,
    far_suites,
    make_env,
)

BETA = 1.5
T = 200


def _expert_action(env: RoboticSequenceEnv, obs: np.ndarray) -> np.ndarray:
    """Meta-World's scripted expert for the stage shown by the observation's one-hot."""
    stage = int(np.argmax(obs[META_WORLD_OBS_DIM : META_WORLD_OBS_DIM + env.num_stages]))
    policy = ENV_POLICY_MAP[env.stage_names[stage]]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Constant(s) may be too high" from the scripted policies
        return policy.get_action(obs[:META_WORLD_OBS_DIM].astype(np.float64))


def _run_episode(
    env: RoboticSequenceEnv, seed: int, policy: str = "expert", rng_seed: int = 0
) -> list[dict[str, Any]]:
    """Roll out one episode with the `expert`, `zero` or `random` policy; record 0 is the reset."""
    obs, info = env.reset(seed=seed)
    records: list[dict[str, Any]] = [{"obs": obs, "info": info}]
    rng = np.random.default_rng(rng_seed)
    done = False
    while not done:
        if policy == "expert":
            action = _expert_action(env, obs)
        elif policy == "zero":
            action = np.zeros(4, dtype=np.float32)
        else:
            action = rng.uniform(-1, 1, size=4).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        records.append(
            {"obs": obs, "reward": reward, "terminated": terminated, "truncated": truncated, "info": info}
        )
        done = terminated or truncated
    return records


@pytest.fixture(scope="module")
def default_env() -> Iterator[RoboticSequenceEnv]:
    env = make_env(Options().model_dump())
    yield env
    env.close()


@pytest.fixture(scope="module")
def expert_episode(default_env: RoboticSequenceEnv) -> list[dict[str, Any]]:
    """Seed 0: the scripted experts solve all four default stages within T each (checked below)."""
    return _run_episode(default_env, seed=0)


def test_spaces_and_default_stages(default_env: RoboticSequenceEnv) -> None:
    assert default_env.stage_names == DEFAULT_STAGES
    assert default_env.observation_space.shape == (META_WORLD_OBS_DIM + 4 + 1,)
    assert default_env.action_space.shape == (4,)
    assert np.all(default_env.action_space.low == -1) and np.all(default_env.action_space.high == 1)
    obs, info = default_env.reset(seed=1)
    assert obs.shape == (44,) and obs.dtype == np.float32
    assert info["stage"] == 0 and info["stage_name"] == "hammer-v3" and info["stages_solved"] == 0


def test_stages_advance_on_real_success(expert_episode: list[dict[str, Any]]) -> None:
    steps = expert_episode[1:]
    done_steps = [r for r in steps if r["info"]["stage_done"]]
    # Algorithm 1: each success moves i -> i+1 within the same episode.
    assert [r["info"]["stage"] for r in done_steps] == [0, 1, 2, 3]
    assert all(r["info"]["stage_success"] for r in done_steps)
    assert [r["info"]["stages_solved"] for r in done_steps] == [1, 2, 3, 4]
    assert [r["info"]["stage_name"] for r in done_steps] == DEFAULT_STAGES
    # Only the last success ends the episode; earlier ones are terminal only via info["stage_done"].
    assert [r["terminated"] for r in done_steps] == [False, False, False, True]
    assert not any(r["truncated"] for r in steps)
    assert all(not r["terminated"] for r in steps[:-1])
    last = steps[-1]["info"]
    assert last["success"] is True and last["time_out"] is False
    assert {k: last[f"stage_{k}_success"] for k in range(4)} == {0: True, 1: True, 2: True, 3: True}
    assert not any(r["info"]["success"] for r in steps[:-1])
    # At a non-final stage boundary the solved stage's own last observation is kept for the learner.
    for r in done_steps[:-1]:
        final = r["info"]["stage_final_observation"]
        assert np.argmax(final[META_WORLD_OBS_DIM:-1]) == r["info"]["stage"]
        assert np.argmax(r["obs"][META_WORLD_OBS_DIM:-1]) == r["info"]["stage"] + 1


def test_one_hot_and_clock_reset(default_env: RoboticSequenceEnv, expert_episode: list[dict[str, Any]]) -> None:
    stage, t = 0, 0
    for index, record in enumerate(expert_episode):
        if index > 0:
            t += 1
            if record["info"]["stage_done"] and not record["terminated"]:
                stage, t = stage + 1, 0  # i <- i + 1, t restarts; obs is the next stage's first one
        obs = record["obs"]
        assert default_env.observation_space.contains(obs)
        expected = np.zeros(4, dtype=np.float32)
        expected[stage] = 1.0
        np.testing.assert_array_equal(obs[META_WORLD_OBS_DIM:-1], expected)
        assert obs[-1] == pytest.approx(t / T)
    assert stage == 3
    # Every stage started from a zero clock, i.e. the clock restarted three times.
    starts = [r for r in expert_episode if r["obs"][-1] == 0.0]
    assert len(starts) == 4


def test_success_reward_augmentation(expert_episode: list[dict[str, Any]]) -> None:
    t = 0
    n_success = 0
    for record in expert_episode[1:]:
        t += 1
        info = record["info"]
        if info["stage_success"]:
            # r'_t = β · r_t · (T − t)
            assert record["reward"] == pytest.approx(BETA * info["raw_reward"] * (T - t))
            assert record["reward"] > info["raw_reward"]
            n_success += 1
            t = 0
        else:
            assert record["reward"] == pytest.approx(info["raw_reward"])
    assert n_success == 4


def test_reward_uses_configured_beta_and_time_limit() -> None:
    env = make_env(Options(stages=["reach"], stage_time_limit=150, success_reward_multiplier=3.0).model_dump())
    records = _run_episode(env, seed=2)
    env.close()
    last = records[-1]
    t = len(records) - 1
    assert last["info"]["stage_success"] and last["terminated"] and last["info"]["success"]
    assert last["reward"] == pytest.approx(3.0 * last["info"]["raw_reward"] * (150 - t))


def test_time_out_ends_episode_as_terminal() -> None:
    env = make_env(Options(stage_time_limit=25).model_dump())
    records = _run_episode(env, seed=0, policy="zero")
    steps = records[1:]
    assert len(steps) == 25  # T steps, then Algorithm 1 leaves its loop
    last = steps[-1]
    assert last["terminated"] is True and last["truncated"] is False
    assert last["info"]["time_out"] and last["info"]["stage_done"] and not last["info"]["success"]
    assert last["info"]["stage"] == 0 and last["info"]["stages_solved"] == 0
    assert [last["info"][f"stage_{k}_success"] for k in range(4)] == [False] * 4
    assert last["obs"][-1] == pytest.approx(1.0)
    assert not any(r["terminated"] or r["info"]["stage_done"] for r in steps[:-1])
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(4, dtype=np.float32))
    env.close()


def test_time_out_as_truncation_when_asked() -> None:
    env = make_env(Options(stages=["push"], stage_time_limit=10, timeout_is_terminal=False).model_dump())
    records = _run_episode(env, seed=0, policy="zero")
    env.close()
    assert len(records) == 11
    assert records[-1]["truncated"] is True and records[-1]["terminated"] is False
    assert records[-1]["info"]["time_out"] is True


def test_stage_limit_beyond_meta_world_horizon() -> None:
    # Meta-World raises once a task env passes its own max_path_length (500); T = 520 must still work.
    env = make_env(Options(stages=["push"], stage_time_limit=520).model_dump())
    records = _run_episode(env, seed=0, policy="zero")
    env.close()
    assert len(records) == 521 and records[-1]["info"]["time_out"]


def test_start_stage_runs_only_the_requested_stage() -> None:
    env = make_env(Options(start_stage=2, num_stages_to_run=1).model_dump())
    records = _run_episode(env, seed=0)
    env.close()
    first_obs, first_info = records[0]["obs"], records[0]["info"]
    assert first_info["stage"] == 2 and first_info["stage_name"] == "peg-unplug-side-v3"
    np.testing.assert_array_equal(first_obs[META_WORLD_OBS_DIM:-1], [0, 0, 1, 0])
    last = records[-1]
    assert {r["info"]["stage"] for r in records[1:]} == {2}
    assert last["terminated"] and last["info"]["success"] and last["info"]["stages_solved"] == 1
    assert last["info"]["stage_2_success"] is True
    assert not any(f"stage_{k}_success" in last["info"] for k in (0, 1, 3))


def test_start_stage_runs_to_the_end_by_default() -> None:
    env = make_env(Options(stages=["reach", "button-press-topdown", "reach"], start_stage=1).model_dump())
    records = _run_episode(env, seed=4)
    env.close()
    assert [r["info"]["stage"] for r in records[1:] if r["info"]["stage_done"]] == [1, 2]
    assert records[-1]["info"]["success"] and records[-1]["info"]["stages_solved"] == 2


def test_seeding_is_deterministic(default_env: RoboticSequenceEnv) -> None:
    first = _run_episode(default_env, seed=11, policy="random", rng_seed=5)
    second = _run_episode(default_env, seed=11, policy="random", rng_seed=5)
    assert len(first) == len(second) == T + 1
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a["obs"], b["obs"])
        assert a.get("reward") == b.get("reward")
    other, _ = default_env.reset(seed=12)
    assert not np.array_equal(other, first[0]["obs"])


def test_expert_trajectory_with_stage_switches_is_deterministic(
    default_env: RoboticSequenceEnv, expert_episode: list[dict[str, Any]]
) -> None:
    again = _run_episode(default_env, seed=0)
    assert len(again) == len(expert_episode)
    for a, b in zip(again, expert_episode):
        np.testing.assert_array_equal(a["obs"], b["obs"])


def test_random_positions_at_every_reset(default_env: RoboticSequenceEnv) -> None:
    default_env.reset(seed=3)
    observations = [default_env.reset()[0] for _ in range(4)]
    hammer_positions = {tuple(np.round(o[4:7], 5)) for o in observations}  # object (hammer) xyz
    assert len(hammer_positions) == 4
    push_env = make_env(Options(stages=["push"], seed=9).model_dump())
    goals = {tuple(np.round(push_env.reset()[0][36:39], 5)) for _ in range(4)}  # goal xyz observable
    assert len(goals) == 4
    # The `seed` option seeds the first unseeded reset.
    first = make_env(Options(stages=["push"], seed=9).model_dump())
    second = make_env(Options(stages=["push"], seed=9).model_dump())
    np.testing.assert_array_equal(first.reset()[0], second.reset()[0])
    for env in (push_env, first, second):
        env.close()


def test_bad_stage_name_lists_allowed_names() -> None:
    with pytest.raises(ValidationError) as excinfo:
        Options(stages=["hammer", "hamer-v3"])
    message = str(excinfo.value)
    assert "'hamer-v3'" in message
    for allowed in ("hammer-v3", "push-wall-v3", "peg-unplug-side-v3", "reach-v3"):
        assert allowed in message


def test_stage_names_are_normalised() -> None:
    opts = Options(stages=["hammer", "push-v3"], pretrained_stages=["push"])
    assert opts.stages == ["hammer-v3", "push-v3"]
    assert opts.pretrained_stages == ["push-v3"]


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ({"start_stage": 4}, "start_stage"),
        ({"start_stage": 3, "num_stages_to_run": 2}, "num_stages_to_run"),
        ({"num_stages_to_run": 0}, "num_stages_to_run"),
        ({"pretrained_stages": ["reach"]}, "pretrained_stages"),
        ({"stage_time_limit": 0}, "stage_time_limit"),
        ({"stages": []}, "at least one"),
        ({"stage_limit": 200}, "stage_limit"),
    ],
)
def test_inconsistent_options_are_rejected(bad: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        Options(**bad)


def test_evaluation_suites_and_far_suites() -> None:
    options = Options().model_dump()
    suites = evaluation_suites(options)
    assert suites == {
        "stage_0_hammer": {"start_stage": 0, "num_stages_to_run": 1},
        "stage_1_push": {"start_stage": 1, "num_stages_to_run": 1},
        "stage_2_peg-unplug-side": {"start_stage": 2, "num_stages_to_run": 1},
        "stage_3_push-wall": {"start_stage": 3, "num_stages_to_run": 1},
        "full": {"start_stage": 0, "num_stages_to_run": None},
    }
    assert far_suites(options) == ["stage_2_peg-unplug-side", "stage_3_push-wall"]
    custom = Options(
        stages=["window-close", "hammer", "push", "peg-unplug-side", "push-wall"], pretrained_stages=["hammer"]
    ).model_dump()
    assert far_suites(custom) == ["stage_1_hammer"]
    assert set(far_suites(custom)) < set(evaluation_suites(custom))
    # Every suite's overrides give valid options on top of the training options.
    for overrides in suites.values():
        Options.model_validate({**options, **overrides})


def test_registry_builds_env_and_suites() -> None:
    entry = get_env_entry("robotic_sequence")
    env = entry.make({"stages": ["reach"], "stage_time_limit": 5})
    obs, _ = env.reset(seed=0)
    assert obs.shape == (META_WORLD_OBS_DIM + 1 + 1,)
    env.close()
    if hasattr(entry, "suites_for"):
        assert set(entry.suites_for(entry.validate_options({}))) == set(evaluation_suites(Options().model_dump()))


def test_passes_gymnasium_env_checker() -> None:
    from gymnasium.utils.env_checker import check_env

    env = make_env(Options(stages=["reach", "push"], stage_time_limit=20).model_dump())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env, skip_render_check=True)
    env.close()
