"""A human demonstration of Montezuma's Revenge, replayed on today's emulator to seed the exploration.

The demonstration is openai/atari-reset's `demos/MontezumaRevenge.demo` (MIT licence; recorded
tool-assisted by a human, 53,061 frames, 71,500 points): one action per emulator frame (indices into
the 18-action set) and, every 100 frames, an emulator state of the ALE of 2018. Those states do not
restore in ale-py 0.11 (an older serialisation, no RNG), but their RAM does: it is the 128 bytes at
offset 155 with stride 4 of each checkpoint (checked: its room and position agree with a replay of the
actions). ftcl keeps the part it needs as a small `.npz` (`actions`, `checkpoint_frames`,
`checkpoint_ram`, `checkpoint_score`), with the source and its licence in `provenance.json` beside it.

Replaying the actions from today's reset drifts off the demonstration within 2,100 frames: the game's
frame counters (RAM 0, 5, 6, ...) start at other values, so a laser or a skull is in another phase
when the player passes it. `replay` therefore goes checkpoint to checkpoint (100 frames): from the
state that matched the previous checkpoint it plays the segment's actions; if the player is not where
the demonstration's RAM puts it (the same room, level, lives and inventory, and x, y), it retries with
d = 1, 2, ..., `max_delay` NOOP frames first (waiting for the hazard's phase the human met; 259 covers
every phase of a byte counter), and if no delay lands exactly, takes the closest landing within
`tolerance` pixels (|dx| + |dy|). It stops at the first checkpoint no delay reaches. On the shipped
demonstration this reaches level 2 (371 of 530 checkpoints, 11 delayed segments, about 20 s).
"""
from __future__ import annotations

import hashlib
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ftcl.envs.montezuma import INVENTORY, LEVEL, LIVES, ROOM, X, Y

NOOP = 0
ACTIONS = 18
SEGMENT_FRAMES = 100
ATARI_RESET_RAM = slice(155, 155 + 512, 4)
"""Where the RAM sits in an atari-reset checkpoint (ALE 0.6 serialisation)."""
ATARI_RESET_SOURCE = {
    "repository": "https://github.com/openai/atari-reset", "commit": "276ff5bcde9584edc76fab867cdfdc5628374a72",
    "path": "demos/MontezumaRevenge.demo", "git_blob": "08232b2de132d7f29b5987dea41ab2df7dfb9cb0",
    "licence": "MIT (Copyright (c) 2018 OpenAI); the licence text is LICENSE.atari-reset beside this file",
}
KEYS = ("actions", "checkpoint_frames", "checkpoint_ram", "checkpoint_score")


@dataclass(frozen=True)
class Demo:
    actions: np.ndarray
    """uint8, one per emulator frame: an index into the 18-action set."""
    checkpoint_frames: np.ndarray
    """int64: the frame index each checkpoint was taken before (100, 200, ...)."""
    checkpoint_ram: np.ndarray
    """(checkpoints, 128) uint8: the RAM at each checkpoint."""
    checkpoint_score: np.ndarray
    """float64: the demonstration's score at each checkpoint."""
    source: dict[str, Any] = field(default_factory=dict)


def position(ram: np.ndarray) -> tuple[int, ...]:
    """(room, level, lives, inventory, x, y): what a replay must agree on at a checkpoint."""
    return tuple(int(ram[k]) for k in (ROOM, LEVEL, LIVES, INVENTORY, X, Y))


def _check(demo: Demo, path: Path) -> Demo:
    actions, frames, ram, score = demo.actions, demo.checkpoint_frames, demo.checkpoint_ram, demo.checkpoint_score
    problems = []
    if actions.ndim != 1 or len(actions) < SEGMENT_FRAMES or actions.dtype != np.uint8 or actions.max() >= ACTIONS:
        problems.append(f"actions must be ≥ {SEGMENT_FRAMES} uint8 indices below {ACTIONS}")
    if ram.ndim != 2 or ram.shape[1:] != (128,) or len(frames) != len(ram) or len(score) != len(ram) or len(ram) == 0:
        problems.append("checkpoint_ram must be (n, 128) with n checkpoint_frames and n checkpoint_score")
    elif np.any(np.diff(frames) != SEGMENT_FRAMES) or frames[0] != SEGMENT_FRAMES or frames[-1] > len(actions):
        problems.append(f"checkpoint_frames must be {SEGMENT_FRAMES}, {2 * SEGMENT_FRAMES}, ... within the actions")
    if problems:
        raise ValueError(f"demonstration {path}: {'; '.join(problems)} (truncated or not a demonstration)")
    return demo


def load_demo(path: str | Path) -> Demo:
    """An ftcl demonstration (`.npz`, checked against the `provenance.json` beside it) or the original
    atari-reset `.demo` pickle (read with `pickle`: open only files you trust)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"demonstration not found: {path}")
    if path.suffix == ".demo":
        try:
            data = pickle.loads(path.read_bytes())
            checkpoints = np.stack([np.asarray(c, np.uint8)[ATARI_RESET_RAM] for c in data["checkpoints"]])
            frames = np.asarray(data["checkpoint_action_nr"], np.int64)
            returns = np.concatenate([[0.0], np.cumsum(np.asarray(data["rewards"], np.float64))])
            demo = Demo(np.asarray(data["actions"], np.uint8), frames, checkpoints, returns[frames], ATARI_RESET_SOURCE)
        except Exception as error:  # a foreign pickle fails in many ways
            raise ValueError(f"{path} is not an atari-reset demonstration ({type(error).__name__}: {error})") from None
        return _check(demo, path)
    if path.suffix != ".npz":
        raise ValueError(f"demonstration {path}: expected an ftcl .npz or an atari-reset .demo file")
    from ftcl.data.integrity import verify_artifact_files

    verify_artifact_files(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in KEYS if key not in archive.files]
            if missing:
                raise ValueError(f"lacks {missing}")
            arrays = {key: archive[key] for key in KEYS}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise ValueError(f"demonstration {path} is not readable ({error})") from None
    import json

    from ftcl.data.integrity import PROVENANCE_FILE

    provenance = path.parent / PROVENANCE_FILE
    source = json.loads(provenance.read_text()).get("source", {}) if provenance.is_file() else {}
    return _check(Demo(**arrays, source=source), path)


def save_demo(path: str | Path, demo: Demo, command: str = "") -> Path:
    """The demonstration as `.npz`, with `provenance.json` (source, licence, the command that made it,
    sha256) beside it."""
    from ftcl.data.integrity import sha256_of, write_provenance

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.npz")
    np.savez_compressed(partial, **{key: getattr(demo, key) for key in KEYS})
    partial.replace(path)
    provenance = {"source": demo.source, "command": command, "frames": int(len(demo.actions)), "checkpoints": int(len(demo.checkpoint_ram)),
                  "score_at_last_checkpoint": float(demo.checkpoint_score[-1]), "sha256": {path.name: sha256_of(path)}}
    write_provenance(path.parent, provenance)
    return path


@dataclass
class ReplayStats:
    checkpoints_reached: int = 0
    delayed_segments: int = 0
    approximate_segments: int = 0
    frames_emulated: int = 0
    """Every frame run, retries included."""
    frames_played: int = 0
    """Frames of the accepted replay (the demonstration's frames plus the NOOP delays)."""
    score: float = 0.0
    stopped_at_frame: int | None = None


def replay(demo: Demo, ale, visit: Callable[[int, float, int], bool | None], max_delay: int = 259, tolerance: int = 8,
           checkpoints: int | None = None, every: int = 4) -> ReplayStats:
    """Replay `demo` on `ale` (an emulator with sticky actions off; reset here) checkpoint by
    checkpoint, as the module doc says. It calls `visit(frames played, score so far, action of that
    frame)` with `ale` at that moment — once at the reset (0 frames, NOOP), then every `every` frames
    of an accepted segment — so the caller can read the RAM and the screen and clone the state. A
    `visit` that returns True ends the replay there."""
    actions = ale.getLegalActionSet()
    stats = ReplayStats()
    ale.reset_game()
    visit(0, 0.0, NOOP)  # the reset state, before any frame
    state, score = ale.cloneState(include_rng=True), 0.0
    total = len(demo.checkpoint_ram) if checkpoints is None else min(checkpoints, len(demo.checkpoint_ram))
    for index in range(total):
        end = int(demo.checkpoint_frames[index])
        segment = demo.actions[end - SEGMENT_FRAMES:end]
        target = position(demo.checkpoint_ram[index])
        chosen, closest = None, None
        for delay in range(max_delay + 1):
            ale.restoreState(state)
            for _ in range(delay):
                ale.act(actions[NOOP])
            for action in segment:
                ale.act(actions[action])
            stats.frames_emulated += delay + len(segment)
            landed = position(ale.getRAM())
            if landed == target:
                chosen = delay
                break
            if landed[:4] == target[:4]:
                distance = abs(landed[4] - target[4]) + abs(landed[5] - target[5])
                if distance <= tolerance and (closest is None or distance < closest[0]):
                    closest = (distance, delay)
        if chosen is None and closest is not None:
            chosen = closest[1]
            stats.approximate_segments += 1
        if chosen is None:
            stats.stopped_at_frame = end
            break
        stats.delayed_segments += chosen > 0
        ale.restoreState(state)
        played = [NOOP] * chosen + [int(a) for a in segment]
        for step, action in enumerate(played, start=1):
            score += ale.act(actions[action])
            if (step % every == 0 or step == len(played)) and visit(stats.frames_played + step, score, action):
                stats.frames_played += step
                stats.checkpoints_reached = index
                stats.score = score
                return stats
        stats.frames_emulated += len(played)
        stats.frames_played += len(played)
        state = ale.cloneState(include_rng=True)
        stats.checkpoints_reached = index + 1
    stats.score = score
    return stats


def demo_digest(demo: Demo) -> str:
    """sha256 over the demonstration's arrays (what a replay depends on)."""
    digest = hashlib.sha256()
    for key in KEYS:
        digest.update(np.ascontiguousarray(getattr(demo, key)).tobytes())
    return digest.hexdigest()


def demonstration_transitions(demo: Demo, start_room: tuple[int, int], *, frame_skip: int = 4, frame_stack: int = 4,
                              screen_size: int = 84, label_smoothing: float = 0.01, max_transitions: int | None = None,
                              exclude_rooms: frozenset[tuple[int, int]] = frozenset(), seed: int = 0) -> dict[str, np.ndarray]:
    """The demonstration as agent steps from its first frame in `start_room` (level, RAM room) to
    the end of that level, in the env's observations (`MontezumaEnv`: `frame_skip` frames per step,
    max over the last two, resized, `frame_stack` stacked; a segment's first stack repeats its
    frame, as a reset into a start state does).

    Steps that end in one of `exclude_rooms` (level, RAM room) are left out — π* is to know only the
    FAR rooms, and the demonstration walks back through earlier ones — and each stretch between them
    is its own episode (truncated at its end). Each step's label is the action the demonstration
    played most in its `frame_skip` frames (NOOP delays of the replay included), as logits of a
    distribution that puts 1 − ε on it and shares ε = `label_smoothing` among the others (BC with
    `teacher_labels: dataset`). Rows follow `ftcl.data.retention_data` (obs and next_obs uint8), at
    most `max_transitions`. ValueError when the demonstration never reaches `start_room`."""
    from ftcl.envs.montezuma import resize_frame
    from ftcl.envs.montezuma_explore import _emulator

    ale = _emulator(seed)
    level = start_room[0]
    segments: list[dict[str, list]] = []  # each: frames (steps + 1 observations), labels, rewards
    state: dict[str, Any] = {"started": False, "open": False, "done": False, "actions": [], "screens": [], "score": 0.0}

    def steps_so_far() -> int:
        return sum(len(segment["labels"]) for segment in segments)

    def visit(frames_played: int, score: float, action: int) -> bool:
        ram = ale.getRAM()
        here = (int(ram[LEVEL]), int(ram[ROOM]))
        if state["done"]:
            return True
        if not state["started"] and here != start_room:
            return False
        if not state["started"] or not state["open"]:  # a segment starts at this frame
            if here in exclude_rooms:
                return False
            state.update(started=True, open=True, actions=[], screens=[], score=score)
            segments.append({"frames": [resize_frame(ale.getScreenGrayscale(), screen_size)], "labels": [], "rewards": []})
            return False
        if here[0] != level or (max_transitions is not None and steps_so_far() >= max_transitions):
            state["done"] = True
            return True
        state["actions"].append(action)
        state["screens"].append(ale.getScreenGrayscale())
        if len(state["actions"]) < frame_skip:
            return False
        if here in exclude_rooms:  # this step ends in an excluded room: the segment ends before it
            state["open"] = False
            return False
        segment = segments[-1]
        counts = np.bincount(state["actions"], minlength=ACTIONS)
        segment["labels"].append(int(np.argmax(counts)))  # ties: the lowest index, NOOP first
        segment["frames"].append(resize_frame(np.maximum.reduce(state["screens"][-2:]), screen_size))
        segment["rewards"].append(score - state["score"])
        state.update(actions=[], screens=[], score=score)
        return False

    replay(demo, ale, visit, every=1)
    segments = [segment for segment in segments if segment["labels"]]
    if not segments:
        raise ValueError(f"the demonstration never reaches level {level + 1}, RAM room {start_room[1]}")
    observations, labels, rewards, truncateds = [], [], [], []
    for segment in segments:
        stack = np.repeat(segment["frames"][0][:, :, None], frame_stack, axis=2)
        stacks = [stack]
        for frame in segment["frames"][1:]:
            stack = np.concatenate([stack[:, :, 1:], frame[:, :, None]], axis=2)
            stacks.append(stack)
        observations.append(np.stack(stacks))
        labels += segment["labels"]
        rewards += segment["rewards"]
        truncateds += [False] * (len(segment["labels"]) - 1) + [True]
    steps = len(labels)
    probabilities = np.full((steps, ACTIONS), label_smoothing / (ACTIONS - 1))
    probabilities[np.arange(steps), labels] = 1.0 - label_smoothing
    return {"obs": np.concatenate([o[:-1] for o in observations]), "actions": np.asarray(labels, np.int64),
            "rewards": np.asarray(rewards, np.float32), "next_obs": np.concatenate([o[1:] for o in observations]),
            "terminateds": np.zeros(steps, bool), "truncateds": np.asarray(truncateds, bool),
            "action_dist_inputs": np.log(probabilities).astype(np.float32)}


def room_visits(demo: Demo, seed: int = 0) -> list[tuple[int, int, int]]:
    """The replayed demonstration's stays in rooms: (level, RAM room, frames stayed), in order."""
    from ftcl.envs.montezuma_explore import _emulator

    ale = _emulator(seed)
    visits: list[tuple[int, int, int]] = []
    current: dict[str, Any] = {"room": None, "since": 0}

    def visit(frames_played: int, score: float, action: int) -> None:
        ram = ale.getRAM()
        here = (int(ram[LEVEL]), int(ram[ROOM]))
        if here != current["room"]:
            if current["room"] is not None:
                visits.append((*current["room"], frames_played - current["since"]))
            current.update(room=here, since=frames_played)

    stats = replay(demo, ale, visit, every=1)
    if current["room"] is not None:
        visits.append((*current["room"], stats.frames_played - current["since"]))
    return visits


def first_visit_order(visits: list[tuple[int, int, int]], level: int = 0, min_frames: int = 50) -> list[int]:
    """RAM rooms of `level` in the order the demonstration first stays in them for ≥ `min_frames`
    frames (a tool-assisted run crosses room edges for a frame or two; those are not visits), with the
    room it leaves the level from last."""
    order: list[int] = []
    for visit_level, room, frames in visits:
        if visit_level == level and frames >= min_frames and room not in order:
            order.append(room)
    exits = [room for visit_level, room, _ in visits if visit_level == level]
    if exits and exits[-1] not in order:
        order.append(exits[-1])
    return order


def path_start_states(demo: Demo, paper_rooms: list[int], every: int = 8, min_frames: int = 50,
                      seed: int = 0) -> dict[str, tuple[Any, np.ndarray, int]]:
    """Start states along the demonstration's path (the backward-from-demonstration recipe,
    Salimans & Chen 2018): in the first stay of ≥ `min_frames` frames in each of `paper_rooms`
    (level 1, the paper's numbers), the emulator state every `every` agent steps (of 4 frames) from
    the stay's first frame, named `room<N>_step<k>` (k agent steps into the room, 4 digits), as
    `name -> (ALEState, RAM, entered_from)` for `save_start_states`. A state late in a stay is a
    few steps from the room's exit, one at k = 0 is the room's entry. ValueError for a room the
    replayed demonstration never stays in."""
    from ftcl.envs.montezuma import PAPER_ROOM_TO_RAM_ROOM
    from ftcl.envs.montezuma_explore import _emulator

    unknown = [n for n in paper_rooms if n not in PAPER_ROOM_TO_RAM_ROOM]
    if unknown or every < 1:
        raise ValueError(f"rooms must be paper rooms {min(PAPER_ROOM_TO_RAM_ROOM)}–{max(PAPER_ROOM_TO_RAM_ROOM)} "
                         f"(got {paper_rooms}) and every ≥ 1 (got {every})")
    wanted = {PAPER_ROOM_TO_RAM_ROOM[n]: n for n in paper_rooms}
    ale = _emulator(seed)
    stays: dict[int, list] = {}  # RAM room -> [(frames into the stay, state, RAM)] of its current stay
    done: dict[int, tuple[int, list]] = {}  # RAM room -> (entered_from, states) of its first long stay
    current = {"room": None, "since": 0, "came_from": -1}

    def visit(frames_played: int, score: float, action: int) -> None:
        ram = ale.getRAM()
        room = int(ram[ROOM]) if int(ram[LEVEL]) == 0 else None
        if room != current["room"]:
            previous = current["room"]
            if previous in wanted and previous not in done and frames_played - current["since"] >= min_frames:
                done[previous] = (current["came_from"], stays[previous])
            current.update(room=room, since=frames_played, came_from=-1 if previous is None else previous)
            stays[room] = []
        into = frames_played - current["since"]
        if room in wanted and room not in done and into % (4 * every) == 0:
            stays[room].append((into // 4, ale.cloneState(include_rng=True), ram.copy()))

    replay(demo, ale, visit, every=1)
    missing = sorted(wanted[room] for room in wanted if room not in done)
    if missing:
        raise ValueError(f"the replayed demonstration never stays {min_frames} frames in paper room(s) {missing}")
    states: dict[str, tuple[Any, np.ndarray, int]] = {}
    for room in sorted(done, key=lambda r: wanted[r]):
        came_from, stay = done[room]
        for step, state, ram in stay:
            states[f"room{wanted[room]}_step{step:04d}"] = (state, ram, came_from)
    return states


def write_path_start_states(demo: Demo, out: Path, paper_rooms: list[int], every: int, command: str,
                            with_states: Path | None = None) -> Path:
    """`out/start_states.npz` from `path_start_states` (after the states of the start-state file
    `with_states`, when given, so that one file holds a room's entry and its path) and
    `out/provenance.json` (command, the demonstration's digest, rooms, spacing, each state's
    read-out), each written whole or not at all."""
    from datetime import datetime

    from ale_py import ALEState

    from ftcl.data.integrity import sha256_of, write_provenance
    from ftcl.envs.montezuma_explore import _emulator
    from ftcl.envs.montezuma_states import load_start_states, save_start_states, state_readouts

    chosen: dict[str, tuple[Any, np.ndarray, int]] = {}
    if with_states is not None:
        base, ale = load_start_states(with_states), _emulator(0)
        for name, blob in zip(base.names, base.blobs):
            ale.restoreState(ALEState(blob))  # to read the state's RAM, which save_start_states records
            chosen[name] = (ALEState(blob), ale.getRAM().copy(), base.info_of(name)["entered_from"])
    chosen.update(path_start_states(demo, paper_rooms, every))
    out = Path(out)
    path = save_start_states(out / "start_states.npz", chosen)
    provenance = {
        "command": command, "method": "states along a replayed human demonstration (ftcl.envs.montezuma_demo.path_start_states)",
        "demonstration_sha256": demo_digest(demo), "paper_rooms": paper_rooms, "every_agent_steps": every,
        "sticky_action_probability_while_replaying": 0.0,
        "with_states": None if with_states is None else str(with_states),
        "states": state_readouts(chosen),
        "created": datetime.now().isoformat(timespec="seconds"), "sha256": {path.name: sha256_of(path)},
    }
    write_provenance(out, provenance)
    return path
