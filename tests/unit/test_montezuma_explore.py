"""Go-Explore-style exploration on the real emulator: the archive grows, resumes, and its start
states restore into the env at the cells they were stored for."""
from __future__ import annotations

import json

import pytest

from ftcl.data.integrity import sha256_of
from ftcl.envs.montezuma import MontezumaEnv, start_state_name
from ftcl.envs.montezuma_explore import cell_of, explore, load_archive, start_states_from_archive, write_start_states
from ftcl.envs.montezuma_states import load_start_states


def test_the_archive_grows_resumes_and_its_states_restore(tmp_path):
    checkpoint = tmp_path / "archive.pkl"
    archive = explore(20_000, seed=3, checkpoint=checkpoint)
    assert archive.frames >= 20_000 and len(archive.cells) >= 10, "a random walk from the start finds cells"
    first_cells = len(archive.cells)
    resumed = explore(40_000, seed=3, resume_from=checkpoint, checkpoint=checkpoint)
    assert resumed.frames >= 40_000 and resumed.iterations > archive.iterations
    assert len(resumed.cells) >= first_cells
    assert load_archive(checkpoint).frames == resumed.frames
    # every stored cell's state is that cell: restoring it reads back the same (level, room, inventory, x, y)
    env = MontezumaEnv({"sticky_action_probability": 0.0})
    env.reset(seed=0)
    from ale_py import ALEState

    for key, cell in list(resumed.cells.items())[:20]:
        env.ale.restoreState(ALEState(cell.state))
        assert cell_of(env.ale.getRAM()) == key
    path = write_start_states(resumed, tmp_path / "artifact", command="test")
    provenance = json.loads((tmp_path / "artifact" / "provenance.json").read_text())
    assert provenance["sha256"]["start_states.npz"] == sha256_of(path)
    states = load_start_states(path)
    assert states.names == [start_state_name(level, room) for level, room in resumed.rooms()]
    assert set(start_states_from_archive(resumed)) == set(states.names)


def test_a_broken_archive_is_refused(tmp_path):
    path = tmp_path / "archive.pkl"
    path.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(ValueError, match="is unreadable"):
        load_archive(path)


def test_the_shipped_start_states_cover_level_one_and_restore_into_their_rooms():
    from ftcl.envs.montezuma import PAPER_ROOM_TO_RAM_ROOM
    from ftcl.spec import REPO_ROOT

    path = REPO_ROOT / "artifacts" / "montezuma" / "start_states" / "start_states.npz"
    states = load_start_states(path)
    assert {f"room{n}" for n in PAPER_ROOM_TO_RAM_ROOM} <= set(states.names), "every room of the level-1 path"
    provenance = json.loads((path.parent / "provenance.json").read_text())
    assert provenance["seeded_from_demonstration"]["source"]["licence"].startswith("MIT")
    for name in ("room1", "room7", "room14", "room23"):
        env = MontezumaEnv({"sticky_action_probability": 0.0, "start_states": str(path), "start_state": name})
        _, info = env.reset(seed=0)
        env.close()
        assert info["level"] == 0 and info["paper_room"] == int(name[4:]), (name, info)
        assert states.info_of(name)["room"] == PAPER_ROOM_TO_RAM_ROOM[int(name[4:])]
    assert states.info_of("room7")["entered_from"] >= 0, "Room 7's entry passage is known"
