"""Games the test records with the real NLE, read back through `nle.dataset`: frames, the keys
mapped to actions, game boundaries across batches, and refusals of what is no dataset."""
from __future__ import annotations

import numpy as np
import pytest

from ftcl.envs.nethack import NetHackEnv
from ftcl.data.ttyrecs import TtyrecBatches, action_of_key, ttyrec_database

QUIT = "#quit\ry"


def record(root, games: int, character: str = "mon-hum-neu-mal",
           run: str = "run0") -> tuple[list[list[int]], list[list[np.ndarray]]]:
    """Play `games` short games (random moves, then #quit) into root/<run>; per game the actions
    and the observations they answered."""
    from nle import nethack

    keys = [int(a) for a in nethack.ACTIONS]
    env = NetHackEnv({"seed": 0, "ttyrec_dir": str(root / run), "character": character})
    rng = np.random.default_rng(0)
    actions, frames = [], []
    for game in range(games):
        obs, _ = env.reset()
        played, seen = [], []
        moves = [keys.index(ord(c)) for c in rng.choice(list("hjklyubn"), 4 + 3 * game)]
        for action in moves + [keys.index(ord(c)) for c in QUIT]:
            seen.append(obs["tty"])
            played.append(action)
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        assert terminated, "quitting ends the game"
        actions.append(played)
        frames.append(seen)
    env.close()
    return actions, frames


def test_recorded_games_read_back_as_observations_actions_and_boundaries(tmp_path):
    actions, frames = record(tmp_path / "data", games=3)
    assert ttyrec_database(tmp_path / "data", tmp_path / "games.db") == 3
    rows = {key: [] for key in ("obs", "actions", "prev_actions", "is_first", "valid", "gameids")}
    for batch in TtyrecBatches(tmp_path / "games.db", batch_size=1, seq_length=7, shuffle=False):
        for key in rows:
            rows[key].append(batch[key][0])
    stream = {key: np.concatenate(values) for key, values in rows.items()}
    starts = np.flatnonzero(stream["is_first"])
    assert len(starts) == 3 and starts[0] == 0, "every game starts once, the first at the stream's start"
    for game, start in enumerate(starts):
        count = len(actions[game])
        np.testing.assert_array_equal(stream["actions"][start:start + count], actions[game])
        # the env observation's prev_action, carried across the 7-step batches
        np.testing.assert_array_equal(stream["prev_actions"][start:start + count], [-1] + actions[game][:-1])
        np.testing.assert_array_equal(stream["obs"][start:start + count], np.stack(frames[game]))
        assert stream["valid"][start:start + count].all()
    # after the quit NLE answers the game's last screens itself (frames the env never showed)
    ends = [start + len(actions[game]) for game, start in enumerate(starts)]
    assert all(end < next_start for end, next_start in zip(ends, list(starts[1:])))
    assert (stream["gameids"][stream["valid"]] > 0).all()


def test_a_dataset_folder_reads_after_it_moves_and_is_refused_without_its_recordings(tmp_path, monkeypatch):
    import shutil
    import sqlite3

    actions, _ = record(tmp_path / "shipped" / "data" / "recordings", games=2)
    database = tmp_path / "shipped" / "data" / "games.db"
    ttyrec_database(tmp_path / "shipped" / "data" / "recordings", database)
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT root FROM roots").fetchone()[0] == "recordings", "kept relative"
    shutil.move(tmp_path / "shipped", tmp_path / "moved")
    monkeypatch.chdir(tmp_path)  # nle.dataset would join a relative root to this folder
    moved = tmp_path / "moved" / "data" / "games.db"
    batch = next(iter(TtyrecBatches(moved, batch_size=2, seq_length=4, shuffle=False)))
    assert batch["valid"].all() and sorted(batch["actions"][:, 0]) == sorted(game[0] for game in actions)
    with sqlite3.connect(moved) as connection:
        assert connection.execute("SELECT root FROM roots").fetchone()[0] == "recordings", "the file is not touched"
    shutil.rmtree(tmp_path / "moved" / "data" / "recordings")
    with pytest.raises(ValueError, match="its recordings .* are missing"):
        TtyrecBatches(moved, batch_size=2, seq_length=4)


def test_what_is_no_dataset_is_refused(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "nle.1.xlogfile").write_text("")
    with pytest.raises(ValueError, match="nle.dataset reads <root>/<run>/\\*.xlogfile"):
        ttyrec_database(flat, tmp_path / "a.db")
    unfinished = tmp_path / "unfinished"
    env = NetHackEnv({"seed": 0, "ttyrec_dir": str(unfinished / "run0")})
    env.reset()
    env.step(0)
    env.close()
    with pytest.raises(ValueError, match="list no finished game"):
        ttyrec_database(unfinished, tmp_path / "b.db")
    assert not (tmp_path / "b.db").exists() and not (tmp_path / "b.db.partial").exists()
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all, just bytes" * 10)
    with pytest.raises(ValueError, match="no nle.dataset database"):
        TtyrecBatches(tmp_path / "junk.db", batch_size=1, seq_length=4)
    actions, _ = record(tmp_path / "two", games=2)
    ttyrec_database(tmp_path / "two", tmp_path / "two.db")
    with pytest.raises(ValueError, match="holds 2 games of 'ftcl'; a batch of 4 rows needs at least as many"):
        TtyrecBatches(tmp_path / "two.db", batch_size=4, seq_length=4)


def test_keys_map_to_the_env_actions():
    from nle import nethack

    table = action_of_key()
    assert table[ord("k")] == [int(a) for a in nethack.ACTIONS].index(ord("k"))
    assert table[ord(" ")] == -1 or int(nethack.ACTIONS[table[ord(" ")]]) == ord(" ")
    assert (table >= -1).all() and table.max() < len(nethack.ACTIONS)


def test_quitting_a_truncated_game_with_a_menu_open_completes_its_recording(tmp_path):
    """An env-truncated game goes on inside NLE and never enters the xlogfile; `quit_game` ends it
    even with the inventory menu or a prompt open, so the recording is a readable game."""
    from nle import nethack

    keys = [int(a) for a in nethack.ACTIONS]
    env = NetHackEnv({"seed": 0, "ttyrec_dir": str(tmp_path / "data" / "run0"), "max_episode_steps": 3})
    for menu in ("i", "#"):  # the inventory menu; an extended-command prompt
        env.reset()
        truncated = False
        for char in "hj" + menu:
            *_, truncated, _ = env.step(keys.index(ord(char)))
        assert truncated
        env.quit_game()
    env.close()
    assert ttyrec_database(tmp_path / "data", tmp_path / "games.db") == 2


def test_a_dataset_keeps_one_characters_games_when_asked(tmp_path):
    """NLD-AA holds every character; the paper's BC and EWC read its Human Monk games."""
    import subprocess
    import sys

    record(tmp_path / "data", games=2)
    record(tmp_path / "data", games=1, character="val-dwa-law-fem", run="run1")
    assert ttyrec_database(tmp_path / "data", tmp_path / "all.db") == 3
    assert ttyrec_database(tmp_path / "data", tmp_path / "monk.db", character="mon-hum-neu-mal") == 2
    assert ttyrec_database(tmp_path / "data", tmp_path / "valkyrie.db", character="val") == 1
    streams = {int(g) for batch in TtyrecBatches(tmp_path / "monk.db", batch_size=1, seq_length=50, shuffle=False)
               for g in batch["gameids"].flatten() if g}
    assert len(streams) == 2, "the reader sees the Monk games only"
    with pytest.raises(ValueError, match="none of its 3 games is of character 'sam-hum-law-mal'"):
        ttyrec_database(tmp_path / "data", tmp_path / "samurai.db", character="sam-hum-law-mal")
    assert not (tmp_path / "samurai.db").exists() and not (tmp_path / "samurai.db.partial").exists()
    done = subprocess.run([sys.executable, "-m", "ftcl.data.ttyrecs", str(tmp_path / "data"), str(tmp_path / "x.db"),
                           "--character", "monk"], capture_output=True, text=True)
    assert done.returncode == 1 and "three letters each, like mon-hum-neu-mal" in done.stderr
    assert not (tmp_path / "x.db").exists()
