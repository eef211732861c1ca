"""Montezuma's Revenge env on the real ALE: preprocessing, RAM read-out, stored start states."""
from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest

from ftcl.envs.montezuma import ROOM, MontezumaEnv, ram_info
from ftcl.envs.montezuma_states import load_start_states, save_start_states
from ftcl.envs.registry import ENVS

DETERMINISTIC = {"sticky_action_probability": 0.0, "seed": 0}


def play(env: MontezumaEnv, actions) -> list[bytes]:
    """RAM after each step, as bytes."""
    trajectory = []
    for action in actions:
        env.step(int(action))
        trajectory.append(env.ale.getRAM().tobytes())
    return trajectory


@pytest.fixture()
def states_file(tmp_path):
    """Two start states: after 60 random steps from the start, and the same with the room byte set to 2."""
    env = MontezumaEnv(DETERMINISTIC)
    env.reset()
    play(env, np.random.default_rng(0).integers(0, 18, 60))
    walked = (env.clone_state(), env.ale.getRAM().copy())
    env.ale.setRAM(ROOM, 2)
    moved = (env.clone_state(), env.ale.getRAM().copy())
    env.close()
    return save_start_states(tmp_path / "states.npz", {"walked": walked, "room_2": moved})


def test_observations_are_stacked_max_pooled_84x84_grey_frames():
    env = MontezumaEnv(DETERMINISTIC)
    obs, info = env.reset()
    assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8 and env.action_space.n == 18
    assert info["room"] == 1 and info["paper_room"] == 1 and info["level"] == 0 and info["rooms_visited"] == [(0, 1)]
    play(env, [0] * 5)
    before, stack_before = env.clone_state(), env._stack.copy()
    obs, *_ = env.step(3)
    # the same step by hand: 4 emulator frames, max over the last two, resized
    env.ale.restoreState(before)
    frames = []
    for _ in range(4):
        env.ale.act(env._actions[3])
        frames.append(env.ale.getScreenGrayscale())
    expected = cv2.resize(np.maximum(frames[2], frames[3]), (84, 84), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(obs[:, :, -1], expected)
    np.testing.assert_array_equal(obs[:, :, :3], stack_before[:, :, 1:])  # the stack shifted by one


def test_a_lost_life_does_not_end_the_episode_and_the_step_limit_truncates():
    env = MontezumaEnv({**DETERMINISTIC, "max_episode_steps": 400})
    env.reset()
    lives, rng = [], np.random.default_rng(1)
    for step in range(400):
        _, _, terminated, truncated, info = env.step(int(rng.integers(18)))
        lives.append(info["lives"])
        if terminated or truncated:
            break
    assert min(lives) < 5, "a random policy loses a life within 400 steps"
    assert truncated or terminated
    if min(lives) > 0:
        assert truncated and step == 399


def test_a_restored_state_replays_identically_and_reads_its_room(states_file):
    actions = np.random.default_rng(2).integers(0, 18, 200)
    runs = []
    for _ in range(2):
        env = MontezumaEnv({**DETERMINISTIC, "start_states": str(states_file), "start_state": "walked"})
        env.reset(seed=123)
        runs.append(play(env, actions))
        env.close()
    assert hashlib.md5(b"".join(runs[0])).hexdigest() == hashlib.md5(b"".join(runs[1])).hexdigest()
    env = MontezumaEnv({**DETERMINISTIC, "start_states": str(states_file), "start_state": "room_2"})
    _, info = env.reset()
    assert info["room"] == 2 and info["rooms_visited"] == [(0, 2)]
    assert load_start_states(states_file).info_of("room_2")["room"] == 2


def test_corrupt_start_state_files_are_refused(states_file, tmp_path):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(states_file.read_bytes()[:2000])
    with pytest.raises(ValueError, match="is not readable"):
        load_start_states(truncated)
    # one state's bytes altered, the file otherwise well-formed: its digest no longer matches
    with np.load(states_file) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["data"] = arrays["data"].copy()
    arrays["data"][100] ^= 0xFF
    altered = tmp_path / "altered.npz"
    np.savez(altered, **arrays)
    with pytest.raises(ValueError, match="state 'walked' does not match its sha256"):
        load_start_states(altered)
    with pytest.raises(ValueError, match="not found"):
        load_start_states(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match="start state 'nowhere' is not in"):
        MontezumaEnv({"start_states": str(states_file), "start_state": "nowhere"})


def test_registry_lists_a_suite_per_start_state(states_file):
    entry = ENVS["montezuma"]
    options = entry.validate_options({"start_states": str(states_file), "start_state": "walked"})
    assert set(entry.suites_for(options)) == {"full", "start_walked", "start_room_2"}
    assert ram_info(np.zeros(128, np.uint8))["room"] == 0


def test_the_paper_room_table_covers_level_one_once():
    from ftcl.envs.montezuma import PAPER_ROOM_TO_RAM_ROOM

    assert sorted(PAPER_ROOM_TO_RAM_ROOM) == list(range(1, 24))
    assert sorted(PAPER_ROOM_TO_RAM_ROOM.values()) == list(range(23))  # RAM 0–22, each once
    assert PAPER_ROOM_TO_RAM_ROOM[1] == 1  # Room 1 is the start room


def entered_room_2_from_room_1(tmp_path) -> tuple:
    """A start-state file with one state `entry`: the game's start with the room byte set to 2,
    entered from room 1; and that state's RAM."""
    env = MontezumaEnv(DETERMINISTIC)
    env.reset()
    env.ale.setRAM(ROOM, 2)
    state, ram = env.clone_state(), env.ale.getRAM().copy()
    env.close()
    return save_start_states(tmp_path / "states.npz", {"entry": (state, ram, 1)}), ram


def test_room_success_is_a_reward_a_new_item_or_another_exit(tmp_path):
    """The paper's room success (B.2) on a real state: entered room 2 from room 1; going back to
    room 1 is no success, a new item or a third room is."""
    path, ram = entered_room_2_from_room_1(tmp_path)
    assert load_start_states(path).info_of("entry")["entered_from"] == 1

    def first_step_after(edit):
        env = MontezumaEnv({**DETERMINISTIC, "start_states": str(path), "start_state": "entry", "end_on_success": True})
        _, info = env.reset()
        assert info["success"] is False
        edit(env.ale)
        _, _, terminated, _, info = env.step(0)
        env.close()
        return info["success"], terminated

    assert first_step_after(lambda ale: ale.setRAM(ROOM, 1)) == (False, False)  # back where it came from
    assert first_step_after(lambda ale: ale.setRAM(ROOM, 6)) == (True, True)    # another passage
    assert first_step_after(lambda ale: ale.setRAM(65, int(ram[65]) | 0x02)) == (True, True)  # a new item
    assert first_step_after(lambda ale: None) == (False, False)


def test_success_reward_and_ending_on_leaving_the_start_room(tmp_path):
    """`success_reward` is paid once, at the success step; `end_on_room_exit` ends the episode when
    the player leaves the start room either way — back where it came from without the reward."""
    path, _ = entered_room_2_from_room_1(tmp_path)

    def first_steps_after(edit, **options):
        env = MontezumaEnv({**DETERMINISTIC, "start_states": str(path), "start_state": "entry", **options})
        env.reset()
        edit(env.ale)
        _, reward, terminated, _, info = env.step(0)
        _, later_reward, _, _, _ = env.step(0)
        env.close()
        return reward, terminated, info["success"], later_reward

    assert first_steps_after(lambda ale: ale.setRAM(ROOM, 6), success_reward=1.0) == (1.0, False, True, 0.0)
    assert first_steps_after(lambda ale: ale.setRAM(ROOM, 6), success_reward=1.0, end_on_room_exit=True)[:3] == (1.0, True, True)
    assert first_steps_after(lambda ale: ale.setRAM(ROOM, 1), success_reward=1.0, end_on_room_exit=True)[:3] == (0.0, True, False)
    assert first_steps_after(lambda ale: None, success_reward=1.0, end_on_room_exit=True)[:3] == (0.0, False, False)


def test_a_start_state_pattern_draws_among_the_matching_states(states_file):
    """`start_state: room_*` starts each episode from one of the matching states, drawn with the
    env's seed; a pattern that matches nothing is refused, naming the states there are."""
    rooms = set()
    env = MontezumaEnv({**DETERMINISTIC, "start_states": str(states_file), "start_state": "*"})
    for seed in range(12):
        _, info = env.reset(seed=seed)
        rooms.add(info["room"])
    env.close()
    walked_room = load_start_states(states_file).info_of("walked")["room"]
    assert rooms == {walked_room, 2}
    env = MontezumaEnv({**DETERMINISTIC, "start_states": str(states_file), "start_state": "room_*"})
    assert {env.reset(seed=seed)[1]["room"] for seed in range(4)} == {2}
    env.close()
    with pytest.raises(ValueError, match=r"'hall_\*' matches no state of .*; it holds walked, room_2"):
        MontezumaEnv({**DETERMINISTIC, "start_states": str(states_file), "start_state": "hall_*"})
