"""NetHack games as recorded terminal sessions (ttyrecs), read through `nle.dataset` in the env's
observation layout: the same code reads NLD-AA (the paper's AutoAscend dataset, 3.5M games) and
the games ftcl records itself (`ttyrec_dir` of the nethack env, an expert's or an agent's).

A dataset is a folder of NLE recordings, one subfolder per recording run, each with its
`*.xlogfile` (NLE writes a game into it when the game ends; a flat folder holds no games for
`nle.dataset`, so it is refused here). `ttyrec_database(root, db)` registers the folder in an
`nle.dataset` sqlite file; recordings that lie beside the database (in its folder or below) are
registered relative to it, so such a dataset folder can move (a shipped π*'s `data/`).
`TtyrecBatches` yields what BC and EWC need, B rows × T steps:

- `obs` (B, T, 3, 24, 80) uint8: the terminal frame at t (`tty_observation`, the `tty` of the nethack env's
  observation, which takes the layout from here);
- `actions` (B, T) int64: the index in the env's action set of the key pressed in response to
  frame t (`keypresses[t]`; NLE's ttyrec v3 records the key after the frame it answers), −1 for a
  key outside the 121 actions (NLE's own keys at a game's end, for instance);
- `prev_actions` (B, T) int64: the action before frame t in its game (−1 at a game's first frame),
  the env observation's `prev_action`;
- `is_first` (B, T) bool: frame t starts a game. `nle.dataset`'s `done` is 1 on the first frame of a
  game's first ttyrec only after a row switched games inside a batch; ftcl rebuilds the boundary
  from the game ids, so it also holds at a batch's first frame and between batches;
- `valid` (B, T) bool: a frame of a game (not the zero padding after the data ends) with a known
  action; `gameids`, `scores` (the in-game score at t).

Each batch row is a stream of whole games in order, continuing in the next batch: a recurrent
learner carries its state from one batch to the next per row and resets it where `is_first`.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

SCREEN = (24, 80)


def tty_observation(chars: np.ndarray, colors: np.ndarray, cursor: np.ndarray) -> np.ndarray:
    """Terminal frames in the nethack env's `tty` layout — channel 0 the characters, 1 their colours,
    2 a mask with 1 at the cursor: (..., 24, 80) characters and colours and (..., 2) cursors
    (row, column) -> (..., 3, 24, 80) uint8."""
    chars, colors, cursor = np.asarray(chars), np.asarray(colors), np.asarray(cursor)
    if chars.ndim == 2:  # one frame, as the env makes every step: no batch bookkeeping
        obs = np.zeros((3, *SCREEN), np.uint8)
        obs[0], obs[1] = chars, colors.astype(np.uint8)
        row, col = int(cursor[0]), int(cursor[1])
        if 0 <= row < SCREEN[0] and 0 <= col < SCREEN[1]:
            obs[2, row, col] = 1
        return obs
    lead = chars.shape[:-2]
    obs = np.zeros((int(np.prod(lead, dtype=np.int64)), 3, *SCREEN), np.uint8)
    obs[:, 0] = chars.reshape(-1, *SCREEN)
    obs[:, 1] = colors.reshape(-1, *SCREEN).astype(np.uint8)
    rows, cols = (cursor.reshape(-1, 2)[:, i].astype(np.int64) for i in (0, 1))
    inside = np.flatnonzero((rows >= 0) & (rows < SCREEN[0]) & (cols >= 0) & (cols < SCREEN[1]))
    obs[inside, 2, rows[inside], cols[inside]] = 1
    return obs.reshape(*lead, 3, *SCREEN)


def action_of_key() -> np.ndarray:
    """A 256-entry table: key code -> index in `nethack.ACTIONS` (the env's action set), −1 if none."""
    from nle import nethack

    table = np.full(256, -1, np.int64)
    for index, action in enumerate(nethack.ACTIONS):
        if 0 <= int(action) < 256 and table[int(action)] < 0:
            table[int(action)] = index
    return table


CHARACTER_FIELDS = ("role", "race", "align0", "gender0")
"""The xlogfile fields of a character's four parts, role-race-alignment-gender (NLE's order, as in
mon-hum-neu-mal); alignment and gender as the game started (a game may convert its alignment)."""


def character_filter(character: str) -> list[tuple[str, str]]:
    """mon-hum-neu-mal -> [(field, value)] for the given parts; "@" (NLE's "any") or a shorter
    string leaves the remaining parts free: "mon" is every Monk. ValueError for another shape."""
    parts = character.lower().split("-")
    if not 1 <= len(parts) <= 4 or any(len(part) != 3 and part != "@" for part in parts):
        raise ValueError(f"character {character!r}: role-race-alignment-gender of three letters each, "
                         "like mon-hum-neu-mal (a part may be @, trailing parts may be left out)")
    return [(field, part) for field, part in zip(CHARACTER_FIELDS, parts) if part != "@"]


def _keep_only_character(db_path: Path, name: str, character: str) -> None:
    """Drop from dataset `name` the games of other characters (the games stay in the file's table)."""
    import sqlite3

    where = " AND ".join(f"lower(substr({field}, 1, 3)) = ?" for field, _ in character_filter(character))
    values = [value for _, value in character_filter(character)]
    connection = sqlite3.connect(str(db_path))
    try:
        with connection:
            connection.execute(f"DELETE FROM datasets WHERE dataset_name = ? AND gameid NOT IN "
                               f"(SELECT gameid FROM games WHERE {where or '1'})", [name, *values])
    finally:
        connection.close()


def ttyrec_database(root: str | Path, db_path: str | Path, name: str = "ftcl", character: str | None = None) -> int:
    """Register the recordings under `root` as dataset `name` in a new sqlite file `db_path`;
    returns the number of games. With `character` (mon-hum-neu-mal: the paper's Human Monk games of
    NLD-AA) only that character's games belong to the dataset. ValueError (nothing left behind)
    when `root` holds no game: no folder, no `<run>/*.xlogfile`, xlogfiles without finished games,
    or none of the character asked for."""
    import nle.dataset as nld

    if character is not None:
        character_filter(character)
    root, db_path = Path(root), Path(db_path)
    if not root.is_dir():
        raise ValueError(f"ttyrec dataset {root}: no such folder")
    xlogs = sorted(root.glob("*/*.xlogfile"))
    if not xlogs:
        flat = " (its xlogfiles lie directly in it: nle.dataset reads <root>/<run>/*.xlogfile)" if list(root.glob("*.xlogfile")) else ""
        raise ValueError(f"ttyrec dataset {root}: no <run>/*.xlogfile under it{flat}")
    if db_path.exists():
        raise ValueError(f"{db_path} exists: give a new file for the dataset's database")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    partial = db_path.with_name(db_path.name + ".partial")
    partial.unlink(missing_ok=True)
    nld.db.create(str(partial))
    nld.add_nledata_directory(str(root.resolve()), name, str(partial))
    games = count_games(partial, name)
    if games and character is not None:
        _keep_only_character(partial, name, character)
        if count_games(partial, name) == 0:
            partial.unlink()
            raise ValueError(f"ttyrec dataset {root}: none of its {games} games is of character {character!r}")
        games = count_games(partial, name)
    if games == 0:
        partial.unlink()
        raise ValueError(f"ttyrec dataset {root}: its xlogfiles list no finished game")
    home = db_path.parent.resolve()
    if root.resolve().is_relative_to(home):  # beside the database: kept relative, the folder can move
        _set_root(partial, name, os.path.relpath(root.resolve(), home))
    os.replace(partial, db_path)
    return games


def _set_root(db_path: str | Path, name: str, root: str) -> None:
    import sqlite3

    connection = sqlite3.connect(str(db_path))
    try:
        with connection:
            connection.execute("UPDATE roots SET root = ? WHERE dataset_name = ?", (root, name))
    finally:
        connection.close()


def _registered_root(db_path: str | Path, name: str) -> str:
    """The root recorded for dataset `name` (ValueError for a file that is no such database)."""
    row = _query(db_path, lambda connection: connection.execute(
        "SELECT root FROM roots WHERE dataset_name = ?", (name,)).fetchone())
    if row is None:
        raise ValueError(f"{db_path} holds no dataset {name!r}")
    return row[0]


def readable_database(db_path: str | Path, folder: str | Path, name: str = "ftcl") -> Path:
    """A database `nle.dataset` reads from any working folder (it joins a relative root to the
    process's own): `db_path` itself when its root is absolute (NLD-AA's, read in place), else a
    copy in `folder` with the root made absolute (the database's own folder joined to it); the file
    given is not touched. ValueError when the recordings are gone."""
    import shutil

    registered = _registered_root(db_path, name)
    root = Path(registered) if os.path.isabs(registered) else Path(db_path).resolve().parent / registered
    if not root.is_dir():
        raise ValueError(f"ttyrec database {db_path}: its recordings ({root}) are missing")
    if os.path.isabs(registered):
        return Path(db_path)
    copy = Path(folder) / Path(db_path).name
    shutil.copyfile(db_path, copy)
    _set_root(copy, name, str(root))
    return copy


def _query(db_path: str | Path, read):
    """`read(connection)` on the sqlite file (ValueError for a file that is no nle.dataset database)."""
    import sqlite3

    import nle.dataset as nld

    try:
        connection = nld.db.connect(str(db_path))
        try:
            return read(connection)
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise ValueError(f"{db_path} is no nle.dataset database ({error})") from None


def count_games(db_path: str | Path, name: str = "ftcl") -> int:
    """Games of dataset `name` in the sqlite file (ValueError for a file that is no such database)."""
    import nle.dataset as nld

    return int(_query(db_path, lambda connection: nld.db.count_games(name, conn=connection)))


class TtyrecBatches:
    """Batches of B game streams × T steps from a registered dataset (module doc)."""

    def __init__(self, db_path: str | Path, batch_size: int, seq_length: int, name: str = "ftcl",
                 shuffle: bool = True, loop_forever: bool = False):
        import nle.dataset as nld

        if not Path(db_path).is_file():
            raise ValueError(f"ttyrec database {db_path} not found: make it with ttyrec_database(root, db)")
        games = count_games(db_path, name)
        if games < batch_size:
            raise ValueError(f"ttyrec database {db_path} holds {games} games of {name!r}; a batch of "
                             f"{batch_size} rows needs at least as many")
        self._folder = tempfile.TemporaryDirectory(prefix="ftcl-ttyrecs-")  # for a copy; lives as long as the reader
        readable = readable_database(db_path, self._folder.name, name)
        self._dataset = nld.TtyrecDataset(name, batch_size=batch_size, seq_length=seq_length,
                                          dbfilename=str(readable), shuffle=shuffle, loop_forever=loop_forever)
        self._actions = action_of_key()

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        previous_game: np.ndarray | None = None
        previous_action: np.ndarray | None = None
        for batch in self._dataset:
            gameids = batch["gameids"].copy()
            before = np.concatenate([np.zeros_like(gameids[:, :1]) if previous_game is None else previous_game,
                                     gameids[:, :-1]], axis=1)
            previous_game = gameids[:, -1:].copy()
            actions = self._actions[batch["keypresses"]]
            is_first = (gameids != before) & (gameids != 0)
            prev_actions = np.concatenate([np.full_like(actions[:, :1], -1) if previous_action is None else previous_action,
                                           actions[:, :-1]], axis=1)
            prev_actions[is_first] = -1
            previous_action = actions[:, -1:].copy()
            yield {
                "obs": tty_observation(batch["tty_chars"], batch["tty_colors"], batch["tty_cursor"]),
                "actions": actions,
                "prev_actions": prev_actions,
                "is_first": is_first,
                "valid": (gameids != 0) & (actions >= 0),
                "gameids": gameids,
                "scores": batch["scores"].copy() if "scores" in batch else np.zeros_like(gameids),
            }


if __name__ == "__main__":  # python -m ftcl.data.ttyrecs ROOT DB [--character C]: register a dataset
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m ftcl.data.ttyrecs",
                                     description="Register NetHack recordings (NLD-AA, or ftcl's) in an nle.dataset database.")
    parser.add_argument("root", help="ROOT/<run>/*.xlogfile with their ttyrecs")
    parser.add_argument("db", help="a new sqlite file")
    parser.add_argument("--character", help="keep one character's games, role-race-alignment-gender "
                                            "(the paper: mon-hum-neu-mal; 'mon' is every Monk)")
    arguments = parser.parse_args()
    try:
        games = ttyrec_database(arguments.root, arguments.db, character=arguments.character)
    except ValueError as error:
        sys.exit(f"error: {error}")
    print(f"{games} games registered in {arguments.db}" + (f" (character {arguments.character})" if arguments.character else ""))
