"""Go-Explore-style exploration of Montezuma's Revenge that stores start states across the level.

No trained agent: an archive of cells, each the best emulator state found for it, grown by
restore-and-explore (Ecoffet et al. 2021, phase 1, on RAM only):
- a cell is (level ram[57], room ram[3], inventory ram[65], x ram[42] // 16, y ram[43] // 16);
- each iteration picks a cell with weight 1/√(chosen + 1) + 1/√(seen + 1) + 1/√(chosen since it
  last led to a new cell + 1), restores its state and takes up to `explore_steps` random actions,
  each held for 4 frames and repeated with probability 0.95 (a random walk that keeps direction);
- the iteration stops at a lost life (ram[55] ≠ 0, the dying flag, or fewer lives) and keeps no
  cell from the dying frames;
- a cell found again is replaced when the new visit has a higher score, or the same score with a
  shorter trajectory.
The emulator runs without sticky actions (p = 0), so a stored state is reached deterministically.

A new archive may be seeded with the cells of a human demonstration replayed on the emulator
(`seed_from_demo`, `ftcl.envs.montezuma_demo`): exploration then widens the demonstration's path
instead of first having to find it.

`explore` returns the archive; `start_states_from_archive` picks one state per (level, room): the
cell first reached in that room (its entry), tie-broken by the shorter trajectory. The archive is
saved every `checkpoint_every_s` seconds and `explore(..., resume_from=...)` continues it.
"""
from __future__ import annotations

import math
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ftcl.envs.montezuma import INVENTORY, LEVEL, LIVES, ROOM, X, Y, start_state_name

DYING = 55
"""RAM byte that is non-zero while Panama Joe dies."""
FRAMES_PER_ACTION = 4
REPEAT_PROBABILITY = 0.95


@dataclass
class Cell:
    state: bytes
    score: float
    trajectory_length: int
    found_at_frame: int
    entered_from: int = -1
    """The RAM room the trajectory to this cell came from into the cell's room (−1: the game's start)."""
    chosen: int = 0
    seen: int = 0
    chosen_since_new: int = 0


@dataclass
class Archive:
    cells: dict[tuple[int, ...], Cell] = field(default_factory=dict)
    frames: int = 0
    iterations: int = 0
    seed: int = 0
    demo: dict[str, Any] | None = None
    """What seeded the archive, when a demonstration did: its source, sha256 and replay statistics."""

    def rooms(self) -> list[tuple[int, int]]:
        return sorted({(key[0], key[1]) for key in self.cells})


def cell_of(ram: np.ndarray) -> tuple[int, ...]:
    return (int(ram[LEVEL]), int(ram[ROOM]), int(ram[INVENTORY]), int(ram[X]) // 16, int(ram[Y]) // 16)


def _emulator(seed: int):
    from ale_py import ALEInterface, LoggerMode, roms

    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.setInt("random_seed", seed)
    ale.setFloat("repeat_action_probability", 0.0)
    ale.setInt("frame_skip", 1)
    ale.loadROM(roms.get_rom_path("montezuma_revenge"))
    return ale


def _offer(archive: Archive, ale, score: float, length: int, frame: int, entered_from: int) -> bool:
    """Keep the emulator's state for its cell when the cell is new or this visit is better (module
    doc); True when the cell is new."""
    key = cell_of(ale.getRAM())
    cell = archive.cells.get(key)
    if cell is None or score > cell.score or (score == cell.score and length < cell.trajectory_length):
        state = bytes(ale.cloneState(include_rng=True).serialize())
        if cell is None:
            archive.cells[key] = Cell(state, score, length, frame, entered_from)
            return True
        cell.state, cell.score, cell.trajectory_length, cell.entered_from = state, score, length, entered_from
    return False


class _RoomTracker:
    """The room a trajectory came from into its current room, updated step by step."""

    def __init__(self, room: int, entered_from: int) -> None:
        self.room, self.entered_from = room, entered_from

    def step(self, room: int) -> int:
        if room != self.room:
            self.room, self.entered_from = room, self.room
        return self.entered_from


def seed_from_demo(archive: Archive, ale, demo) -> None:
    """Add the cells a replay of `demo` passes through (`ftcl.envs.montezuma_demo.replay`), each with
    the replay's state, score and length in agent steps of 4 frames; frames of a dying player are
    skipped."""
    from dataclasses import asdict

    from ftcl.envs.montezuma_demo import demo_digest, replay

    start = archive.frames
    rooms = _RoomTracker(room=1, entered_from=-1)

    def visit(frames_played: int, score: float, action: int) -> None:
        ram = ale.getRAM()
        entered_from = rooms.step(int(ram[ROOM]))
        if ram[DYING] == 0:
            _offer(archive, ale, score, frames_played // FRAMES_PER_ACTION, start + frames_played, entered_from)

    stats = replay(demo, ale, visit)
    archive.frames += stats.frames_emulated
    archive.demo = {"source": demo.source, "sha256_of_arrays": demo_digest(demo), "replay": asdict(stats)}


def explore(frames: int, seed: int = 0, explore_steps: int = 100, resume_from: Path | None = None,
            checkpoint: Path | None = None, checkpoint_every_s: float = 60.0, progress_every_s: float = 30.0,
            demo=None) -> Archive:
    """Grow an archive for `frames` emulator frames in all (resumed archives keep their count). A new
    archive starts from the game's start state, and from the cells of `demo` (a
    `ftcl.envs.montezuma_demo.Demo`) when one is given."""
    from ale_py import ALEState

    ale = _emulator(seed)
    actions = ale.getLegalActionSet()
    archive = load_archive(resume_from) if resume_from is not None and Path(resume_from).is_file() else None
    if archive is None:
        archive = Archive(seed=seed)
        ale.reset_game()
        archive.cells[cell_of(ale.getRAM())] = Cell(bytes(ale.cloneState(include_rng=True).serialize()), 0.0, 0, 0)
        if demo is not None:
            seed_from_demo(archive, ale, demo)
            if checkpoint is not None:
                save_archive(archive, checkpoint)
    rng = np.random.default_rng(seed + archive.iterations)
    last_checkpoint = last_progress = time.time()
    while archive.frames < frames:
        keys = list(archive.cells)
        weights = np.array([1 / math.sqrt(c.chosen + 1) + 1 / math.sqrt(c.seen + 1) + 1 / math.sqrt(c.chosen_since_new + 1)
                            for c in archive.cells.values()])
        start = archive.cells[keys[rng.choice(len(keys), p=weights / weights.sum())]]
        start.chosen += 1
        start.chosen_since_new += 1
        ale.restoreState(ALEState(start.state))
        score, length, lives = start.score, start.trajectory_length, int(ale.getRAM()[LIVES])
        rooms = _RoomTracker(int(ale.getRAM()[ROOM]), start.entered_from)
        action = actions[rng.integers(len(actions))]
        found_new = False
        for _ in range(explore_steps):
            if rng.random() > REPEAT_PROBABILITY:
                action = actions[rng.integers(len(actions))]
            for _ in range(FRAMES_PER_ACTION):
                score += ale.act(action)
            archive.frames += FRAMES_PER_ACTION
            length += 1
            ram = ale.getRAM()
            if ram[DYING] != 0 or int(ram[LIVES]) < lives or ale.game_over():
                break
            found_new |= _offer(archive, ale, score, length, archive.frames, rooms.step(int(ram[ROOM])))
            archive.cells[cell_of(ram)].seen += 1
        if found_new:
            start.chosen_since_new = 0
        archive.iterations += 1
        now = time.time()
        if checkpoint is not None and now - last_checkpoint >= checkpoint_every_s:
            save_archive(archive, checkpoint)
            last_checkpoint = now
        if now - last_progress >= progress_every_s:
            print(f"[ftcl] explore: {archive.frames:,}/{frames:,} frames | {len(archive.cells)} cells | "
                  f"rooms {[room for _, room in archive.rooms()]} | best score "
                  f"{max(c.score for c in archive.cells.values()):.0f}", file=sys.stderr, flush=True)
            last_progress = now
    if checkpoint is not None:
        save_archive(archive, checkpoint)
    return archive


def write_start_states(archive: Archive, out: Path, command: str) -> Path:
    """`out/start_states.npz` (one state per room, `start_states_from_archive`) and `out/provenance.json`
    (command, frames, seed, rooms, cells, best score, sha256), both written whole or not at all."""
    from datetime import datetime

    from ftcl.data.integrity import sha256_of, write_provenance
    from ftcl.envs.montezuma_states import save_start_states, state_readouts

    out = Path(out)
    chosen = start_states_from_archive(archive)
    states = save_start_states(out / "start_states.npz", chosen)
    provenance = {
        "command": command, "method": "Go-Explore-style archive exploration (ftcl.envs.montezuma_explore)",
        "frames": archive.frames, "iterations": archive.iterations, "seed": archive.seed,
        "cells": len(archive.cells), "rooms": [list(room) for room in archive.rooms()],
        "best_score": max(cell.score for cell in archive.cells.values()),
        "sticky_action_probability_while_exploring": 0.0,
        "seeded_from_demonstration": archive.demo,
        "states": state_readouts(chosen),
        "created": datetime.now().isoformat(timespec="seconds"),
        "sha256": {states.name: sha256_of(states)},
    }
    write_provenance(out, provenance)
    return states


def save_archive(archive: Archive, path: Path) -> None:
    """The archive as a pickle, written to a temporary name then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(pickle.dumps(archive))
    partial.replace(path)


def load_archive(path: Path) -> Archive:
    try:
        archive = pickle.loads(Path(path).read_bytes())
    except Exception as error:  # a truncated pickle raises many kinds of errors
        raise ValueError(f"exploration archive {path} is unreadable ({type(error).__name__}: {error})") from None
    if not isinstance(archive, Archive):
        raise ValueError(f"exploration archive {path} holds a {type(archive).__name__}, not an Archive")
    return archive


def start_states_from_archive(archive: Archive) -> dict[str, Any]:
    """One state per (level, room): the cell reached first in it (ties: the shorter trajectory),
    named by `start_state_name`, as `name -> (ALEState, RAM, entered_from)` for `save_start_states`."""
    from ale_py import ALEState

    ale = _emulator(archive.seed)
    first: dict[tuple[int, int], Cell] = {}
    for key, cell in archive.cells.items():
        room = (key[0], key[1])
        best = first.get(room)
        if best is None or (cell.found_at_frame, cell.trajectory_length) < (best.found_at_frame, best.trajectory_length):
            first[room] = cell
    states = {}
    for (level, room), cell in sorted(first.items()):
        state = ALEState(cell.state)
        ale.restoreState(state)
        states[start_state_name(level, room)] = (state, ale.getRAM().copy(), cell.entered_from)
    return states
