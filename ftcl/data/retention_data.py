"""π*'s retention data file: one .npz of transitions, and the checks that read only its headers.

Keys (one row per transition): obs, actions, rewards, next_obs, terminateds, truncateds, and
action_dist_inputs (π*'s distribution inputs at obs). What a method reads is what it declares
(`RetentionMethod.data_needs`): BC and EWC `obs` (EWC with `fisher_labels: dataset` also
`actions`, BC with `teacher_labels: dataset` `action_dist_inputs`); EM the full transitions.
Written by `ftcl.pretrain.data` (π*'s rollouts) and `ftcl.pretrain.demonstrations`.

For recurrent policies (NetHack) π*'s data may instead be a ttyrec database (`*.db`, made by
`ftcl.data.ttyrecs.ttyrec_database`: NLD-AA or games ftcl recorded), or a dataset folder with its
`games.db` beside the recordings (what `ftcl pretrain` writes as π*'s `data/`, checked whole
against the π*'s provenance). Its "shape" is
{`ttyrec_games`: (number of games,)}, so the same checks count its games (sequence BC needs at
least one game per batch row), and loading it gives {`ttyrec_database`: its path}: the learner
streams sequences from it (`ftcl.data.ttyrecs.TtyrecBatches`) rather than holding arrays.
"""
from __future__ import annotations

import functools
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

TTYREC_GAMES = "ttyrec_games"
"""The one key of a ttyrec database's shapes: its number of games (module doc)."""
TTYREC_DATABASE = "ttyrec_database"
"""The one key of a loaded ttyrec database: its path."""
TRANSITION_KEYS = ("obs", "actions", "rewards", "next_obs", "terminateds", "truncateds")
ALL_KEYS = TRANSITION_KEYS + ("action_dist_inputs",)


def check_retention_shapes(
    shapes: Mapping[str, tuple[int, ...]],
    required_keys: Iterable[str],
    min_rows: int = 1,
    source: str = "retention data",
) -> None:
    """Raise ValueError naming missing keys, ragged arrays, or too few rows (from array shapes)."""
    required = list(required_keys)
    missing = [key for key in required if key not in shapes]
    if missing:
        raise ValueError(f"{source} lacks key(s) {missing}; present: {sorted(shapes)}")
    lengths = {key: (shape[0] if shape else 0) for key, shape in shapes.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{source} has arrays of different lengths: {lengths}")
    rows = next(iter(lengths.values()), 0)
    if rows < min_rows:
        unit = "games" if TTYREC_GAMES in shapes else "rows"
        raise ValueError(f"{source} holds {rows} {unit}; at least {min_rows} are needed")


def check_retention_data(
    data: Mapping[str, np.ndarray],
    required_keys: Iterable[str],
    min_rows: int = 1,
    source: str = "retention data",
) -> None:
    """`check_retention_shapes` on loaded arrays."""
    check_retention_shapes({key: np.shape(value) for key, value in data.items()}, required_keys, min_rows, source)


DATASET_DATABASE = "games.db"
"""The database file of a ttyrec dataset folder."""


def ttyrec_database_in(path: str | Path) -> Path | None:
    """The `games.db` of a ttyrec dataset folder; None for anything else (FileNotFoundError for a
    folder without one: a folder is data only as such a dataset)."""
    path = Path(path)
    if not path.is_dir():
        return None
    if not (path / DATASET_DATABASE).is_file():
        raise FileNotFoundError(f"retention data folder {path} holds no {DATASET_DATABASE} (a ttyrec dataset "
                                "folder, as `ftcl pretrain` writes for NetHack); give an .npz or a .db file")
    return path / DATASET_DATABASE


def retention_data_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Key -> array shape of an .npz, read from the array headers only (no array is loaded).

    ValueError names a file that is not a readable .npz; FileNotFoundError a missing one.
    """
    path = ttyrec_database_in(path) or Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"retention data file not found: {path}")
    if path.suffix == ".db":
        from ftcl.data.ttyrecs import count_games

        return {TTYREC_GAMES: (count_games(path),)}
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as stream:
                    major, _ = np.lib.format.read_magic(stream)
                    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    shape, _, _ = read_header(stream)
                shapes[member[: -len(".npy")]] = tuple(shape)
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise ValueError(f"retention data {path} is not a readable .npz ({error})") from None
    return shapes


def save_retention_data(path: str | Path, data: Mapping[str, np.ndarray]) -> Path:
    """Write `data` to a compressed .npz (after checking the transition keys); returns the path."""
    check_retention_data(data, ("obs",), source="data to save")
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"retention data files end in .npz; got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.stem + ".partial.npz")
    np.savez_compressed(temporary, **{key: np.asarray(value) for key, value in data.items()})
    temporary.replace(path)  # nothing half-written under the final name
    return path


def load_retention_data(path: str | Path) -> dict[str, np.ndarray]:
    """Read an .npz written by `save_retention_data` (FileNotFoundError names the path).

    A process reads a file once: the arrays of the last files read are kept (read-only) and
    returned again while the file's size and modification time are unchanged — a trial's
    retention term and its Fig. 8 evaluation share one read of π*'s data.
    """
    path = ttyrec_database_in(path) or Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"retention data file not found: {path}")
    if path.suffix == ".db":
        return {TTYREC_DATABASE: np.asarray(str(path.resolve()))}
    stat = path.stat()
    return dict(_read_arrays(str(path.resolve()), stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=2)
def _read_arrays(path: str, size: int, modified_ns: int) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    for array in arrays.values():
        array.flags.writeable = False  # shared by every reader in this process
    return arrays
