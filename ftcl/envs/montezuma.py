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

Start states: an episode can start from a stored emulator state (`start_states` file, `start_state`
name), see `ftcl.envs.montezuma_states`. A state restores the emulator with its RNG; the sticky-action
memory (the previous action) is not part of it, so with p > 0 the first frames after a restore may
differ between replays. FAR evaluation keeps sticky actions on: success is measured under the
dynamics the agent is trained and deployed with; with p = 0 a restored state replays exactly (tests).
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

ROOM, X, Y, LIVES, LEVEL, INVENTORY = 3, 42, 43, 58, 57, 65
"""RAM addresses (bytes of the 128-byte RAM)."""

PAPER_ROOM_TO_RAM_ROOM = {1: 1, 2: 2, 3: 6, 4: 7, 5: 13, 6: 21, 7: 5, 8: 0, 9: 4, 10: 10, 11: 3, 12: 9, 13: 8,
                          14: 14, 15: 12, 16: 11, 17: 19, 18: 20, 19: 22, 20: 18, 21: 17, 22: 16, 23: 15}
"""The paper's room numbers (its Fig. 12: rooms numbered along the level-1 solution path, Room 1 =
the start room) -> RAM room ids (ram[3]) of level 1. The paper gives no RAM ids. Derived as the order
of first visits along a human solution of level 1: the RAM of the 530 checkpoints (one per 100
frames) of openai/atari-reset's `demos/MontezumaRevenge.demo` (MIT licence), ram[3] read at byte
offset 155 + 4·3 of each. Its path: 1 → 2 → 6 → 7 → 13 → 21 → 13 → 7 → 6 → 5 → 6 → 2 → 1 → 0 → 4 → 10
→ 4 → 3 → 9 → 8 → … → 19 → 18 → 17 → 16 → 15 → level 2. An assumption, not a fact: the paper's
solution path may visit rooms in another order (then only this table changes). Room 24 of a level
(RAM 23) is not on the path."""
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
    """A start-state file (`ftcl.envs.montezuma_states`); None: every episode starts at the game's start."""
    start_state: str | None = None
    """The name of the state in `start_states` that episodes start from."""
    seed: int | None = None
    """Seed of the first reset when `reset` is called without one (None: fresh entropy)."""

    @model_validator(mode="after")
    def _state_needs_file(self) -> "Options":
        if (self.start_state is None) != (self.start_states is None):
            raise ValueError("give `start_states` (a file) and `start_state` (a name in it) together, or neither")
        return self


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
        self._start = None
        if o.start_states is not None:
            from ftcl.envs.montezuma_states import load_start_states

            self._start = load_start_states(o.start_states).state(o.start_state)
        self._stack: np.ndarray | None = None
        self._steps = 0
        self._rooms: list[tuple[int, int]] = []
        self._first_reset = True

    # ---- frames ----
    def _frame(self, screen: np.ndarray) -> np.ndarray:
        """A grey screen resized to the observation's size."""
        import cv2

        size = self.options.screen_size
        return cv2.resize(screen, (size, size), interpolation=cv2.INTER_AREA)

    def _info(self) -> dict[str, Any]:
        info = ram_info(self.ale.getRAM())
        here = (info["level"], info["room"])
        if here not in self._rooms:
            self._rooms.append(here)
        info["rooms_visited"] = list(self._rooms)
        info["num_rooms_visited"] = len(self._rooms)
        return info

    # ---- gym API ----
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and self._first_reset:
            seed = self.options.seed
        self._first_reset = False
        super().reset(seed=seed)
        self._atari.reset(seed=seed)
        if self._start is not None:
            self.ale.restoreState(self._start)
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
        terminated = bool(self.ale.game_over())
        truncated = not terminated and self._steps >= self.options.max_episode_steps
        return self._stack.copy(), float(reward), terminated, truncated, self._info()

    def clone_state(self):
        """The emulator's state now, with its RNG (an `ale_py.ALEState`)."""
        return self.ale.cloneState(include_rng=True)

    def close(self):
        self._atari.close()


def make_env(options: dict[str, Any]) -> gym.Env:
    return MontezumaEnv(options)


def evaluation_suites(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`full`: from the game's start. One `start_<name>` suite per state of the start-state file."""
    suites: dict[str, dict[str, Any]] = {"full": {"start_states": None, "start_state": None}}
    if options.get("start_states"):
        from ftcl.envs.montezuma_states import load_start_states

        for name in load_start_states(options["start_states"]).names:
            suites[f"start_{name}"] = {"start_state": name}
    return suites
