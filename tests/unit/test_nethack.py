"""NetHack env on the real NLE 1.3: seeding, the FAR starts by level teleport, Table-4 metrics."""
from __future__ import annotations

import re

import numpy as np
import pytest
from pydantic import ValidationError

from ftcl.envs.nethack import NetHackEnv, episode_metrics
from ftcl.envs.registry import ENVS


def key(env: NetHackEnv, char: str):
    from nle import nethack

    return env.step([int(a) for a in nethack.ACTIONS].index(ord(char)))


def play(env: NetHackEnv, keys: str) -> list[np.ndarray]:
    """The terminals the env shows after each key."""
    return [key(env, char)[0]["tty"] for char in keys]


WALK = "hjklyubn" * 6 + "s" * 10


def test_the_same_seed_replays_the_same_games_and_another_seed_does_not():
    first, second, other = (NetHackEnv({"seed": seed}) for seed in (5, 5, 6))
    try:
        for game in range(2):  # the seed starts a sequence of games: the second game replays too
            starts = [env.reset()[0]["tty"] for env in (first, second, other)]
            assert np.array_equal(starts[0], starts[1])
            assert np.array_equal(np.stack(play(first, WALK)), np.stack(play(second, WALK)))
        assert not np.array_equal(starts[0], starts[2])
        _, info = first.reset(seed=11)
        assert np.array_equal(first.reset(seed=11)[0]["tty"], other.reset(seed=11)[0]["tty"])
    finally:
        for env in (first, second, other):
            env.close()


def test_observation_is_the_terminal_with_a_cursor_mask():
    env = NetHackEnv({"seed": 0})
    observation, info = env.reset()
    _, _, _, _, _ = env.step(3)
    second, *_ = env.step(5)
    env.close()
    assert env.observation_space.contains(observation) and env.observation_space.contains(second)
    assert int(observation["prev_action"]) == -1 and int(second["prev_action"]) == 5
    obs = observation["tty"]
    assert obs.shape == (3, 24, 80) and obs.dtype == np.uint8
    top = bytes(obs[0, 0]).decode("latin-1")
    assert "welcome to NetHack" in top and "neutral male human Monk" in top
    assert "Dlvl:1" in bytes(obs[0, 23]).decode("latin-1")
    assert obs[2].sum() == 1
    assert info["dlvl"] == 1 and info["xplvl"] == 1 and info["steps"] == 0


@pytest.mark.parametrize("start, depths, dungeon", [("dlvl4", {4}, 0), ("sokoban", {5, 6, 7, 8, 9}, 4)])
def test_far_starts_land_on_their_level_as_a_human_monk(start, depths, dungeon):
    """dlvl4: depth 4 of the main dungeon. sokoban: Sokoban's branch, whose entry level is reached by
    the up-stair of the level below the Oracle's, so it lies at the Oracle's depth (5–9)."""
    env = NetHackEnv({"seed": 1, "start": start})
    try:
        for seed in (1, 2, 3):
            observation, info = env.reset(seed=seed)
            obs, depth = observation["tty"], info["depth"]
            assert depth in depths and info["dungeon"] == dungeon
            assert info["score"] == 0.0, "score counts from the start state"
            assert f"Dlvl:{depth}" in bytes(obs[0, 23]).decode("latin-1")
            assert "Monk" in bytes(obs[0, 22]).decode("latin-1") or "Candidate" in bytes(obs[0, 22]).decode("latin-1")
            play(env, WALK)
            assert env._last["blstats"][env._nethack.NLE_BL_DEPTH] == depth, "the agent cannot teleport itself"
    finally:
        env.close()
    if start == "sokoban":  # a boulder in Sokoban is a level feature the map shows
        assert "`" in "".join(bytes(row).decode("latin-1") for row in obs[0])


def test_table_4_metrics_of_a_scripted_episode():
    """Eat the first food in the starting kit, then walk and search: turns, steps, eating and
    scout move; an episode with no new turn for `no_progress_timeout` steps is truncated."""
    env = NetHackEnv({"seed": 3, "no_progress_timeout": 20})
    env.reset()
    key(env, "e")
    letter = re.search(r"\[([a-zA-Z])", bytes(env._last["message"]).decode("latin-1")).group(1)
    key(env, letter)
    for _ in range(3):
        key(env, "\r")
    for char in WALK:
        _, _, terminated, truncated, info = key(env, char)
    assert not (terminated or truncated)
    assert info["eating"] > 0 and info["turns"] > 20 and info["steps"] == len(WALK) + 5
    assert info["scout"] > 0 and info["dlvl"] == 1
    metrics = episode_metrics(info)
    assert set(metrics) >= {"score", "turns", "steps", "dlvl", "xplvl", "gold", "eating", "scout", "staircase", "sokoban"}
    truncated, steps = False, 0
    while not truncated:  # "i" opens the inventory, Escape closes it: no game turn passes
        _, _, terminated, truncated, _ = key(env, "i" if steps % 2 == 0 else "\x1b")
        steps += 1
        assert not terminated and steps <= 20
    assert env._no_progress == 20  # the truncation came from the counter, at its limit
    env.close()


def test_bad_options_are_refused_naming_what_is_allowed():
    with pytest.raises(ValidationError, match="unknown start 'dlvl99'; allowed: game, dlvl2 … dlvl53, sokoban"):
        ENVS["nethack"].validate_options({"start": "dlvl99"})
    with pytest.raises(ValidationError, match="role-race-alignment-gender"):
        ENVS["nethack"].validate_options({"character": "monk"})
    assert set(ENVS["nethack"].suites_for(ENVS["nethack"].validate_options({}))) == {"full", "dlvl4", "sokoban"}
