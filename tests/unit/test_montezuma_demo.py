"""The shipped human demonstration: it is checked on load, and its segment-by-segment replay on
today's emulator follows the demonstration's RAM (room, level, lives, inventory, position)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ftcl.envs.montezuma_demo import Demo, demonstration_transitions, load_demo, position, replay, save_demo
from ftcl.envs.montezuma_explore import Archive, _emulator, cell_of, seed_from_demo

SHIPPED = Path(__file__).resolve().parents[2] / "artifacts" / "montezuma" / "demo" / "montezuma_demo.npz"


@pytest.fixture(scope="module")
def demo() -> Demo:
    return load_demo(SHIPPED)


def test_the_shipped_demo_has_its_source_and_licence(demo):
    assert demo.source["repository"] == "https://github.com/openai/atari-reset" and "MIT" in demo.source["licence"]
    assert (SHIPPED.parent / "LICENSE.atari-reset").read_text().startswith("The MIT License")
    assert len(demo.actions) == 53_061 and demo.checkpoint_ram.shape == (530, 128)
    assert demo.checkpoint_score[-1] == 71_500


def test_the_replay_follows_the_demonstration_past_a_desynchronised_segment(demo):
    """Plain replay of the actions loses a life at frame ~2,050 (the demonstration's frame counters
    started elsewhere); segment replay with NOOP delays stays on the demonstration's path."""
    ale = _emulator(0)
    actions = ale.getLegalActionSet()
    ale.reset_game()
    for action in demo.actions[:2100]:
        ale.act(actions[action])
    assert position(ale.getRAM()) != position(demo.checkpoint_ram[20]), "plain replay desynchronises"

    at_checkpoints = {}

    def visit(frames_played, score, action):
        at_checkpoints[frames_played] = position(ale.getRAM())

    stats = replay(demo, ale, visit, checkpoints=25)
    assert stats.checkpoints_reached == 25 and stats.delayed_segments >= 1 and stats.stopped_at_frame is None
    assert position(ale.getRAM()) == position(demo.checkpoint_ram[24])
    assert stats.score == demo.checkpoint_score[24]


def test_seeding_an_archive_adds_cells_along_the_path(demo):
    ale = _emulator(0)
    archive = Archive(seed=0)
    demo_head = Demo(demo.actions[:3000], demo.checkpoint_frames[:30], demo.checkpoint_ram[:30],
                     demo.checkpoint_score[:30], demo.source)
    seed_from_demo(archive, ale, demo_head)
    rooms = {room for _, room in archive.rooms()}
    assert {1, 2, 6, 7} <= rooms, f"the first 3,000 frames pass rooms 1, 2, 6, 7 (got {sorted(rooms)})"
    assert archive.demo["replay"]["checkpoints_reached"] == 30 and archive.frames >= 3000
    from ale_py import ALEState

    for key, cell in list(archive.cells.items())[::25]:
        ale.restoreState(ALEState(cell.state))
        assert cell_of(ale.getRAM()) == key


def test_an_altered_or_truncated_demo_is_refused(tmp_path, demo):
    folder = tmp_path / "demo"
    shutil.copytree(SHIPPED.parent, folder)
    altered = folder / SHIPPED.name
    data = bytearray(altered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    altered.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256|differs|altered"):
        load_demo(altered)

    short = Demo(demo.actions[:150], demo.checkpoint_frames[:3], demo.checkpoint_ram[:3], demo.checkpoint_score[:3])
    path = save_demo(tmp_path / "short" / "demo.npz", short)
    with pytest.raises(ValueError, match="checkpoint_frames"):
        load_demo(path)
    assert json.loads((path.parent / "provenance.json").read_text())["frames"] == 150

    (tmp_path / "x.demo").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(ValueError, match="not an atari-reset demonstration"):
        load_demo(tmp_path / "x.demo")
    with pytest.raises(ValueError, match="not found"):
        load_demo(tmp_path / "missing.npz")
    bad = Demo(np.full(200, 40, np.uint8), demo.checkpoint_frames[:2], demo.checkpoint_ram[:2], demo.checkpoint_score[:2])
    with pytest.raises(ValueError, match="indices below 18"):
        load_demo(save_demo(tmp_path / "bad" / "demo.npz", bad))


def test_demonstration_transitions_are_the_envs_observations_with_the_demonstrated_actions(demo):
    """From the game's start (Room 1): while the demonstration holds one action for a whole agent
    step, the env stepped with that action shows exactly the recorded observation."""
    from ftcl.envs.montezuma import MontezumaEnv

    data = demonstration_transitions(demo, (0, 1), max_transitions=40, label_smoothing=0.02)
    steps = len(data["actions"])
    assert steps == 40 and data["obs"].dtype == np.uint8 and data["obs"].shape == (40, 84, 84, 4)
    np.testing.assert_array_equal(data["next_obs"][:-1], data["obs"][1:])
    np.testing.assert_array_equal(data["obs"][1:, ..., :3], data["obs"][:-1, ..., 1:])  # the stack shifts
    probabilities = np.exp(data["action_dist_inputs"])
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probabilities[np.arange(steps), data["actions"]], 0.98, rtol=1e-5)
    assert data["truncateds"][-1] and not data["truncateds"][:-1].any() and not data["terminateds"].any()

    env = MontezumaEnv({"sticky_action_probability": 0.0})
    observation, _ = env.reset(seed=0)
    np.testing.assert_array_equal(observation, data["obs"][0])
    compared = 0
    for t in range(steps):
        group = demo.actions[4 * t:4 * t + 4]
        if len(set(group.tolist())) != 1:
            break
        observation, *_ = env.step(int(group[0]))
        np.testing.assert_array_equal(observation, data["next_obs"][t])
        assert data["actions"][t] == group[0]
        compared += 1
    env.close()
    assert compared >= 3, f"only {compared} agent steps with one held action at the start"


def test_the_paper_room_table_is_the_demonstrations_first_visit_order(demo):
    from ftcl.envs.montezuma import PAPER_ROOM_TO_RAM_ROOM
    from ftcl.envs.montezuma_demo import first_visit_order, room_visits

    order = first_visit_order(room_visits(demo), min_frames=50)
    assert {number: room for number, room in enumerate(order, start=1)} == PAPER_ROOM_TO_RAM_ROOM


def test_demonstrations_from_room_7_leave_out_the_close_rooms(demo):
    from ftcl.envs.montezuma import PAPER_ROOM_TO_RAM_ROOM

    close = frozenset((0, PAPER_ROOM_TO_RAM_ROOM[n]) for n in range(1, 7))
    room7 = (0, PAPER_ROOM_TO_RAM_ROOM[7])
    whole = demonstration_transitions(demo, room7, max_transitions=2500)
    far = demonstration_transitions(demo, room7, exclude_rooms=close, max_transitions=2500)
    assert whole["truncateds"].sum() == 1, "without exclusions: one episode"
    assert far["truncateds"].sum() >= 2, "the path walks back through CLOSE rooms: each stretch is its own episode"
    ends = np.flatnonzero(far["truncateds"])[:-1]
    starts = ends + 1  # a new stretch starts from a repeated frame, as a reset does
    assert all((far["obs"][i][..., 0] == far["obs"][i][..., -1]).all() for i in starts)


def test_path_start_states_walk_through_room_7_from_its_entry(demo, tmp_path):
    """The states along the demonstration's first stay in Room 7 (RAM room 0, entered from the
    start room) every 8 agent steps, stored with the rooms' entries of another file, restore into
    Room 7 with the player moving along; a room the demonstration never stays in is refused."""
    from ftcl.envs.montezuma import PAPER_ROOM_TO_RAM_ROOM, MontezumaEnv
    from ftcl.envs.montezuma_demo import path_start_states, write_path_start_states
    from ftcl.envs.montezuma_states import load_start_states, save_start_states

    entry = _emulator(0)
    entry.reset_game()
    base = save_start_states(tmp_path / "base" / "start_states.npz", {"room1": (entry.cloneState(include_rng=True), entry.getRAM().copy())})
    path = write_path_start_states(demo, tmp_path / "out", [7], 8, "test", with_states=base)
    states = load_start_states(path)
    steps = [name for name in states.names if name.startswith("room7_step")]
    assert states.names[0] == "room1" and len(steps) >= 15 and steps[0] == "room7_step0000" and steps[1] == "room7_step0008"
    assert {states.info_of(name)["room"] for name in steps} == {PAPER_ROOM_TO_RAM_ROOM[7]}
    assert {states.info_of(name)["entered_from"] for name in steps} == {PAPER_ROOM_TO_RAM_ROOM[1]}
    assert len({states.info_of(name)["x"] for name in steps}) >= 5, "the player moves through the room"
    env = MontezumaEnv({"sticky_action_probability": 0.0, "start_states": str(path), "start_state": steps[-1]})
    _, info = env.reset(seed=0)
    assert info["room"] == PAPER_ROOM_TO_RAM_ROOM[7] and info["success"] is False
    env.close()
    with pytest.raises(ValueError, match="paper rooms 1–23"):
        path_start_states(demo, [24])
