"""Stored Montezuma's Revenge start states: one .npz of serialized ALE states, checked on load.

Keys: `names` (one per state), `data` (the states' `ALEState.serialize()` bytes, concatenated),
`offsets` (n + 1 byte offsets into `data`), `sha256` (hex digest of each state's bytes) and the RAM
read-out of each state (`room`, `level`, `x`, `y`, `inventory`, `lives`). No pickles: the file is
read with `allow_pickle=False`. Optional key `entered_from`: per state, the RAM room the player came
from into the state's room (−1: unknown or the game's start), which the Room-success rule needs. A missing, truncated or altered file, or one state whose bytes do
not match their digest, is a ValueError naming the file (and the state); the file is also checked
against the `provenance.json` beside it when there is one (`ftcl.data.integrity.verify_artifact_files`).
"""
from __future__ import annotations

import functools
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ftcl.envs.montezuma import INVENTORY, LEVEL, ROOM, X, Y, ram_info

INFO_KEYS = ("room", "paper_room", "level", "x", "y", "inventory", "lives")
KEYS = ("names", "data", "offsets", "sha256") + INFO_KEYS
OPTIONAL_KEYS = ("entered_from",)


@dataclass(frozen=True)
class StartStates:
    """The states of one file, by name, with their RAM read-out."""

    path: Path
    names: list[str]
    blobs: list[bytes]
    info: dict[str, np.ndarray]

    def state(self, name: str):
        """The `ale_py.ALEState` stored under `name` (ValueError names the states that exist)."""
        from ale_py import ALEState

        if name not in self.names:
            raise ValueError(f"start state {name!r} is not in {self.path}; it holds "
                             f"{', '.join(self.names[:10])}{' ...' if len(self.names) > 10 else ''}")
        return ALEState(self.blobs[self.names.index(name)])

    def info_of(self, name: str) -> dict[str, int]:
        """The state's RAM read-out and `entered_from` (−1 when the file does not say)."""
        index = self.names.index(name)
        return {"entered_from": -1, **{key: int(values[index]) for key, values in self.info.items()}}


def save_start_states(path: str | Path, states: Mapping[str, Any]) -> Path:
    """Write `name -> (ALEState, RAM)` or `name -> (ALEState, RAM, entered_from)`; temporary file,
    then rename (never half-written)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"start-state files end in .npz; got {path}")
    names, blobs, infos, entered_from = [], [], [], []
    for name, (state, ram, *came_from) in states.items():
        names.append(str(name))
        blobs.append(bytes(state.serialize()))
        infos.append(ram_info(np.asarray(ram)))
        entered_from.append(int(came_from[0]) if came_from else -1)
    offsets = np.cumsum([0] + [len(blob) for blob in blobs]).astype(np.int64)
    arrays = {
        "names": np.array(names, dtype=str), "data": np.frombuffer(b"".join(blobs), dtype=np.uint8),
        "offsets": offsets, "sha256": np.array([hashlib.sha256(blob).hexdigest() for blob in blobs], dtype=str),
        **{key: np.array([info[key] for info in infos], dtype=np.int64) for key in INFO_KEYS},
        "entered_from": np.array(entered_from, dtype=np.int64),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.npz")
    np.savez_compressed(partial, **arrays)
    partial.replace(path)
    return path


def state_readouts(states: Mapping[str, tuple[Any, np.ndarray, int]]) -> dict[str, dict[str, int]]:
    """Per `name -> (ALEState, RAM, entered_from)`: level, RAM room, x, y, inventory and
    entered_from, as provenance files record them."""
    return {name: {"level": int(ram[LEVEL]), "ram_room": int(ram[ROOM]), "x": int(ram[X]), "y": int(ram[Y]),
                   "inventory": int(ram[INVENTORY]), "entered_from": int(entered_from)}
            for name, (_, ram, entered_from) in states.items()}


def load_start_states(path: str | Path) -> StartStates:
    """Read and check a start-state file (module doc). A process reads and checks a file once: the
    result is kept while the file's size and modification time are unchanged (the env and every
    `evaluation_suites` call of a trial share one read)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"start-state file not found: {path}")
    from ftcl.data.integrity import PROVENANCE_FILE

    stat, provenance = path.stat(), path.parent / PROVENANCE_FILE
    provenance_ns = provenance.stat().st_mtime_ns if provenance.is_file() else None
    return _read_start_states(path.resolve(), stat.st_size, stat.st_mtime_ns, provenance_ns)


@functools.lru_cache(maxsize=4)
def _read_start_states(path: Path, size: int, modified_ns: int, provenance_ns: int | None) -> StartStates:
    from ftcl.data.integrity import verify_artifact_files

    verify_artifact_files(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in KEYS if key not in archive.files]
            if missing:
                raise ValueError(f"lacks {missing}")
            arrays = {key: archive[key] for key in KEYS + tuple(OPTIONAL_KEYS) if key in archive.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise ValueError(f"start-state file {path} is not readable ({error}); re-create it") from None
    names = [str(name) for name in arrays["names"]]
    offsets, data = arrays["offsets"], arrays["data"].tobytes()
    if len(offsets) != len(names) + 1 or offsets[0] != 0 or np.any(np.diff(offsets) <= 0) or offsets[-1] != len(data):
        raise ValueError(f"start-state file {path}: offsets do not match its {len(names)} states and "
                         f"{len(data)} bytes (truncated or altered)")
    blobs = [data[offsets[i]:offsets[i + 1]] for i in range(len(names))]
    for name, blob, digest in zip(names, blobs, arrays["sha256"]):
        if hashlib.sha256(blob).hexdigest() != str(digest):
            raise ValueError(f"start-state file {path}: state {name!r} does not match its sha256 (altered)")
    if len(set(names)) != len(names):
        raise ValueError(f"start-state file {path}: duplicate state names")
    info = {key: arrays[key] for key in INFO_KEYS + OPTIONAL_KEYS if key in arrays}
    if any(len(values) != len(names) for values in info.values()):
        raise ValueError(f"start-state file {path}: the read-out arrays do not have one entry per state (altered)")
    return StartStates(path, names, blobs, info)
