"""Montezuma's Revenge on ALE: the paper's preprocessing, room tracking from RAM, stored start states.

Preprocessing (jcwleo's RND setup, which the paper follows, Table 2):
- ALE without its own frame skip; each agent action is held for `frame_skip` = 4 frames and the
  observation is the pixel-wise max of the last two of them (Atari sprites flicker);
- sticky actions: with probability p = 0.25 the emulator repeats the previous action (ALE's own
  `repeat_action_probability`, applied per frame);
- 84×84 greyscale (area interpolation), the last 4 observations stacked, channels last, uint8;
- 4,500 agent steps per episode; a lost life does not end the episode (the game's end does);
- the full 18-action set.

RAM read-out (AtariARI annotations, Go-Explore's Montezuma env): room ram[3] (0–23 on level 1),
level ram[57] (0-based), x ram[42], y ram[43], inventory ram[65], lives ram[58]. `info` carries
them, with `rooms_visited`: the (level, room) pairs the episode has been in, in order of first visit.

Success in a room (paper B.2, for episodes from a start state): the agent collects a reward while
in the start room (a jewel, or the key, the sword, the torch, a door it opens), picks up an item it
did not hold (a new bit in ram[65]), or leaves the room into another room than the one the start
state came from (its `entered_from`; each neighbour has one passage, so this is "a different
passage than the entry one"; when the file does not know, any room counts). `info["success"]`
stays true for the rest of the episode. The game gives no points for leaving a room the right way:
`success_reward` adds a reward at the success step, and `end_on_room_exit` ends an episode when
the player leaves the start room either way (pre-training π* in FAR rooms only, backward from the
demonstration's path states, `start_state: room7_step*`).

Start states: an episode can start from a stored emulator state (`start_states` file, `start_state`
name), see `ftcl.envs.montezuma_states`. A state restores the emulator with its RNG; the sticky-action
memory (the previous action) is not part of it, so with p > 0 the first frames after a restore may
differ between replays. FAR evaluation keeps sticky actions on: success is measured under the
dynamics the agent is trained and deployed with; with p = 0 a restored state replays exactly (tests).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

ROOM, X, Y, LIVES, LEVEL, INVENTORY = 3, 42, 43, 58, 57, 65
"""RAM addresses (bytes of the 128-byte RAM)."""

PAPER_ROOM_TO_RAM_ROOM = {1: 1, 2: 2, 3: 6, 4: 7, 5: 13, 6: 21, 7: 0, 8: 4, 9: 10, 10: 5, 11: 3, 12: 9, 13: 8,
                          14: 14, 15: 12, 16: 11, 17: 19, 18: 20, 19: 22, 20: 18, 21: 17, 22: 16, 23: 15}
"""The paper's room numbers (its Fig. 12: rooms numbered along the level-1 solution path, Room 1 =
the start room) -> RAM room ids (ram[3]) of level 1. The paper gives no RAM ids. Derived as the order
in which a human solution of level 1 first stays in each room: openai/atari-reset's
`demos/MontezumaRevenge.demo` (MIT licence), replayed frame by frame
(`ftcl.envs.montezuma_demo.first_visit_order(room_visits(demo), min_frames=50)`, checked by a test),
a stay counting when the player is in the room for ≥ 50 frames (12 agent steps): the tool-assisted run
crosses room edges for 2 frames and turns back after 32, which are not visits of a solution path.
Its path: 1 → 2 → 6 → 7 → 13 → 21 → (back) → 0 → 4 → 10 → 5 → 3 → 9 → 8 → 14 → 12 → 11 → 19 → 20 → 22
→ 18 → 17 → 16 → 15 → level 2; Room 7 is RAM room 0, behind the start room's left door. An
assumption, not a fact: with a 25-frame threshold Room 7 would be RAM 5, and the paper's solution
path may visit rooms in another order (then only this table changes). RAM room 23 is not on the path."""
RAM_ROOM_TO_PAPER_ROOM = {ram: paper for paper, ram in PAPER_ROOM_TO_RAM_ROOM.items()}


def start_state_name(level: int, ram_room: int) -> str:
    """The name of a room's start state: `room<N>` with the paper's number N for a room of level 1
    (RAM level 0) on its path, else `level<game level, from 1>_ram<RAM room>` (`level2_ram5`)."""
    if level == 0 and ram_room in RAM_ROOM_TO_PAPER_ROOM:
        return f"room{RAM_ROOM_TO_PAPER_ROOM[ram_room]}"
    return f"level{level + 1}_ram{ram_room}"


class Options(BaseModel):
    """Validated options of a Montezuma's Revenge env."""

    model_config = ConfigDict(extra="forbid", strict=True)

    sticky_action_probability: float = Field(0.25, ge=0.0, le=1.0)
    frame_skip: int = Field(4, ge=1)
    max_episode_steps: int = Field(4500, ge=1)
    """Agent steps (of `frame_skip` frames each) before the episode is truncated."""
    frame_stack: int = Field(4, ge=1)
    screen_size: int = Field(84, ge=8)
    start_states: str | None = None
    """A start-state file (`ftcl.envs.montezuma_states`): its states are evaluation suites
    (`start_<name>`), and `start_state` may pick the one training episodes start from."""
    start_state: str | None = None
    """The name of the state in `start_states` that episodes start from (None: the game's start), or
    a pattern with `*` (`room7_step*`): each reset then draws one of the matching states uniformly."""
    seed: int | None = None
    """Seed of the first reset when `reset` is called without one (None: fresh entropy)."""
    end_on_success: bool = False
    """End an episode from a start state at its success (evaluation suites set it)."""
    end_on_room_exit: bool = False
    """End an episode from a start state when the player leaves the start room, succeeding or not
    (pre-training in FAR rooms: the agent never trains in the rooms it came from)."""
    success_reward: float = Field(0.0, ge=0.0)
    """Added to the game's reward at the step an episode from a start state first succeeds (the
    game gives none for leaving a room the right way; pre-training backward from a demonstration)."""

    @model_validator(mode="after")
    def _state_needs_file(self) -> "Options":
        if self.start_state is not None and self.start_states is None:
            raise ValueError("`start_state` names a state of a `start_states` file; give the file too")
        if self.start_states is not None:  # the file's content, before anything runs (read once per process)
            from ftcl.envs.montezuma_states import load_start_states

            states = load_start_states(self.start_states)
            if self.start_state is not None:
                matching_start_states(states, self.start_state)
        return self


def matching_start_states(states, pattern: str) -> list[str]:
    """The names of `states` that `pattern` names (itself, or those matching a `*` pattern);
    ValueError naming some that exist when none does."""
    import fnmatch

    if "*" not in pattern:
        states.state(pattern)
        return [pattern]
    names = [name for name in states.names if fnmatch.fnmatchcase(name, pattern)]
    if not names:
        raise ValueError(f"start_state {pattern!r} matches no state of {states.path}; it holds "
                         f"{', '.join(states.names[:10])}{' ...' if len(states.names) > 10 else ''}")
    return names


def resize_frame(screen: np.ndarray, size: int) -> np.ndarray:
    """A grey screen resized to size × size (area interpolation), uint8."""
    import cv2

    return cv2.resize(screen, (size, size), interpolation=cv2.INTER_AREA)


def ram_info(ram: np.ndarray) -> dict[str, int]:
    """Room (RAM id, and the paper's number; 0 = not on its path), level, position, inventory and
    lives from the 128-byte RAM."""
    return {"room": int(ram[ROOM]), "paper_room": RAM_ROOM_TO_PAPER_ROOM.get(int(ram[ROOM]), 0),
            "level": int(ram[LEVEL]), "x": int(ram[X]), "y": int(ram[Y]),
            "inventory": int(ram[INVENTORY]), "lives": int(ram[LIVES])}


class MontezumaEnv(gym.Env):
    """Montezuma's Revenge with the paper's preprocessing (module doc)."""

    metadata = {"render_modes": []}

    def __init__(self, options: dict[str, Any] | Options | None = None):
        from ale_py.env import AtariEnv

        self.options = options if isinstance(options, Options) else Options.model_validate(options or {})
        o = self.options
        # ALE's own emulator, one frame per act; the preprocessing below is ours
        self._atari = AtariEnv("montezuma_revenge", obs_type="grayscale", frameskip=1,
                               repeat_action_probability=o.sticky_action_probability, full_action_space=True)
        self.ale = self._atari.ale
        self._actions = self._atari._action_set
        self.action_space = gym.spaces.Discrete(len(self._actions))
        self.observation_space = gym.spaces.Box(0, 255, (o.screen_size, o.screen_size, o.frame_stack), np.uint8)
        self._starts: list[tuple[Any, int]] = []  # (ALEState, entered_from) per start state
        if o.start_state is not None:
            from ftcl.envs.montezuma_states import load_start_states

            states = load_start_states(o.start_states)
            self._starts = [(states.state(name), states.info_of(name)["entered_from"])
                            for name in matching_start_states(states, o.start_state)]
        self._start_entered_from = -1
        self._success = self._left_start_room = False
        self._start_room: tuple[int, int] | None = None
        self._start_inventory = 0
        self._stack: np.ndarray | None = None
        self._steps = 0
        self._rooms: list[tuple[int, int]] = []
        self._first_reset = True

    # ---- frames ----
    def _frame(self, screen: np.ndarray) -> np.ndarray:
        return resize_frame(screen, self.options.screen_size)

    def _info(self) -> dict[str, Any]:
        info = ram_info(self.ale.getRAM())
        here = (info["level"], info["room"])
        if here not in self._rooms:
            self._rooms.append(here)
        info["rooms_visited"] = list(self._rooms)
        info["num_rooms_visited"] = len(self._rooms)
        info["success"] = self._success
        return info

    def _update_success(self, reward: float) -> bool:
        """The room-success rule of the module doc, for episodes from a start state; True at the
        step it first holds. Notes whether the player is out of the start room."""
        if self._start_room is None:
            return False
        ram = self.ale.getRAM()
        level, room, inventory = int(ram[LEVEL]), int(ram[ROOM]), int(ram[INVENTORY])
        in_start_room = (level, room) == self._start_room
        self._left_start_room = self._left_start_room or not in_start_room
        if self._success:
            return False
        left_elsewhere = not in_start_room and (level != self._start_room[0] or room != self._start_entered_from)
        self._success = (reward > 0 and in_start_room) or bool(inventory & ~self._start_inventory) or left_elsewhere
        return self._success

    # ---- gym API ----
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and self._first_reset:
            seed = self.options.seed
        self._first_reset = False
        super().reset(seed=seed)
        self._atari.reset(seed=seed)
        self._success, self._start_room, self._left_start_room = False, None, False
        if self._starts:
            state, self._start_entered_from = self._starts[int(self.np_random.integers(len(self._starts)))]
            self.ale.restoreState(state)
            ram = self.ale.getRAM()
            self._start_room, self._start_inventory = (int(ram[LEVEL]), int(ram[ROOM])), int(ram[INVENTORY])
        frame = self._frame(self.ale.getScreenGrayscale())
        self._stack = np.repeat(frame[:, :, None], self.options.frame_stack, axis=2)
        self._steps = 0
        self._rooms = []
        return self._stack.copy(), self._info()

    def step(self, action: int):
        assert self._stack is not None, "call reset() first"
        skip = self.options.frame_skip
        reward, last_two = 0.0, []
        for frame_index in range(skip):
            reward += self.ale.act(self._actions[int(action)])
            if frame_index >= skip - 2:
                last_two.append(self.ale.getScreenGrayscale())
            if self.ale.game_over():
                break
        frame = self._frame(np.maximum.reduce(last_two) if last_two else self.ale.getScreenGrayscale())
        self._stack = np.concatenate([self._stack[:, :, 1:], frame[:, :, None]], axis=2)
        self._steps += 1
        if self._update_success(reward):
            reward += self.options.success_reward
        terminated = (bool(self.ale.game_over()) or (self.options.end_on_success and self._success)
                      or (self.options.end_on_room_exit and self._left_start_room))
        truncated = not terminated and self._steps >= self.options.max_episode_steps
        return self._stack.copy(), float(reward), terminated, truncated, self._info()

    def clone_state(self):
        """The emulator's state now, with its RNG (an `ale_py.ALEState`)."""
        return self.ale.cloneState(include_rng=True)

    def render_frame(self) -> np.ndarray:
        """The emulator's screen in colour, (210, 160, 3) uint8 (not the agent's 84×84 grey frames)."""
        return np.asarray(self.ale.getScreenRGB(), dtype=np.uint8)

    def close(self):
        self._atari.close()


def make_env(options: dict[str, Any]) -> gym.Env:
    return MontezumaEnv(options)


DEFAULT_DEMONSTRATION = Path(__file__).resolve().parents[2] / "artifacts" / "montezuma" / "demo" / "montezuma_demo.npz"


def recorded_demonstrations(options: dict[str, Any], settings: Any, seed: int) -> dict[str, np.ndarray]:
    """Pre-training demonstrations: the human demonstration (`settings.source`, default the shipped
    one) replayed from its first frame in the room of `start_state` (the room pre-training episodes
    start in, that of the first state a pattern names; Room 1 without one) to the end of that level, as agent steps with this env's
    observations (`ftcl.envs.montezuma_demo.demonstration_transitions`), at most
    `settings.transitions` of them, without the steps in level-1 rooms that come before the start
    room on the paper's path (the CLOSE rooms, which the demonstration walks back through)."""
    from ftcl.envs.montezuma_demo import demonstration_transitions, load_demo

    level, room = 0, PAPER_ROOM_TO_RAM_ROOM[1]
    if options.get("start_state"):
        from ftcl.envs.montezuma_states import load_start_states

        states = load_start_states(options["start_states"])
        info = states.info_of(matching_start_states(states, options["start_state"])[0])
        level, room = info["level"], info["room"]
    before = RAM_ROOM_TO_PAPER_ROOM.get(room, 0) if level == 0 else 0
    close = frozenset((0, PAPER_ROOM_TO_RAM_ROOM[n]) for n in range(1, before))
    demo = load_demo(settings.source or DEFAULT_DEMONSTRATION)
    return demonstration_transitions(demo, (level, room), exclude_rooms=close, frame_skip=options["frame_skip"],
                                     frame_stack=options["frame_stack"], screen_size=options["screen_size"],
                                     label_smoothing=settings.label_smoothing, max_transitions=settings.transitions,
                                     seed=seed)


def episode_metrics(last_info: dict[str, Any]) -> dict[str, float]:
    """Per training episode (paper Fig. 18): how many rooms it visited, the furthest paper room of
    level 1 it reached, and one 0/1 per paper room of level 1 (`room<N>_visited`)."""
    visited = [tuple(room) for room in last_info.get("rooms_visited", [])]
    paper_rooms = {RAM_ROOM_TO_PAPER_ROOM[room] for level, room in visited if level == 0 and room in RAM_ROOM_TO_PAPER_ROOM}
    metrics = {"rooms_visited": float(len(visited)), "furthest_paper_room": float(max(paper_rooms, default=0))}
    metrics.update({f"room{number}_visited": float(number in paper_rooms) for number in PAPER_ROOM_TO_RAM_ROOM})
    return metrics


def evaluation_suites(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`full`: from the game's start. One `start_<name>` suite per state of the start-state file
    (`start_room7`: the paper's Room 7), ending at the room's success or after
    `START_SUITE_MAX_STEPS` agent steps."""
    suites: dict[str, dict[str, Any]] = {"full": {"start_state": None, "end_on_success": False}}
    if options.get("start_states"):
        from ftcl.envs.montezuma_states import load_start_states

        for name in load_start_states(options["start_states"]).names:
            suites[f"start_{name}"] = {"start_state": name, "end_on_success": True,
                                       "max_episode_steps": min(START_SUITE_MAX_STEPS, options.get("max_episode_steps", 4500))}
    return suites


START_SUITE_MAX_STEPS = 1000
"""Agent steps (≈ 67 s of game time) an evaluation episode from a start state has to succeed: the
paper does not say; with 5 lives this is several tries at the room."""
