"""NetHack on NLE 1.3 as the paper plays it (§2.1): Human Monk, the in-game score as reward.

The game is NLE's `NetHackChallenge` setting — the full keyboard (`nethack.ACTIONS`, 121 actions),
menus and "--More--" left to the agent (`allow_all_modes`), every yes/no question the agent's,
no time penalty, an episode aborted after `no_progress_timeout` (150, the authors' `challenge`
setting) steps in which the game's turn counter does not move. It is built on `NetHackScore`,
because `NetHackChallenge` forbids NLE's seeding, and ftcl seeds: a seed (the option, or
`reset(seed=)`) starts a generator that draws NLE's core and display seeds for each game
(`seed(core, disp, reseed=False)`), so the same seed replays the same games.

Observation: a dict of the paper model's two inputs (§B.1, `use_prev_action`):
  * `tty`: uint8 (3, 24, 80) — the terminal as the agent sees it: channel 0 the characters
    (`tty_chars`), 1 their colours (`tty_colors` as NLE gives them, 0–31), 2 a mask with 1 at the
    cursor (`tty_cursor`). The top line (messages) and the bottom two lines (status) are rows 0
    and 22–23 of the same screen, as in the authors' encoder;
  * `prev_action`: int64 scalar — the agent's action of the step before (−1 at an episode's first
    step). The authors' learner keeps it beside the rollout; here the env hands it over, so RLlib's
    episodes, a recurrent module's training sequences and ttyrec datasets carry it alike.

FAR starts (paper Fig. 5): the authors restore AutoAscend's saved games on dungeon level 4 and
on the first Sokoban level, with a fork of NLE that stock NLE 1.3 lacks. Here a FAR episode
starts a fresh game in wizard mode and level-teleports (Ctrl-V): `start: dlvl4` to depth 4,
`start: sokoban` to Sokoban's entry level (soko4, picked from the teleport menu). The difference,
which the results state: the character is a fresh experience-level-1 Monk with its starting kit,
not the expert's mid-game character, and the level is new to it (nothing explored). Wizard mode's
one escape, the "Die?" question, is answered "y" by the env: a death stays a death.

Metrics per episode (`info`, paper Table 4 and the authors' task scores): score (gained since the
episode's start, so a FAR episode counts what the agent added), turns, steps, dlvl (the deepest
depth), xplvl, gold (gold picked up), eating (the sum of rises of the hunger counter), scout
(map cells seen, summed over levels), staircase (steps spent on a down staircase), sokoban (pits
and holes filled with boulders, from the game's messages).
"""
from __future__ import annotations

import re
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ftcl.data.ttyrecs import SCREEN, tty_observation
SOKOBAN_DUNGEON = 4
"""`blstats` dungeon number of Sokoban in NetHack 3.6's dungeon.def order (Doom, Gehennom, Mines,
Quest, Sokoban, ...)."""
PIT_MESSAGES = (b"fills a pit", b"plugs a hole")
"""The game's messages when a pushed boulder fills a pit or plugs a hole (Sokoban's progress)."""
_START = re.compile(r"^(game|sokoban|dlvl([2-9]|[1-4][0-9]|5[0-3]))$")


class Options(BaseModel):
    """Validated options of a NetHack env."""

    model_config = ConfigDict(extra="forbid", strict=True)

    character: str = "mon-hum-neu-mal"
    """role-race-alignment-gender, NLE's spelling (the paper: Human Monk)."""
    max_episode_steps: int = Field(100_000, ge=1)
    no_progress_timeout: int = Field(150, ge=1)
    """Agent steps without a new game turn before the episode is aborted (truncated)."""
    start: str = "game"
    """`game` (a new game), `dlvl<N>` (teleported to depth N, 2–53) or `sokoban` (its entry level)."""
    seed: int | None = None
    """Seed of the first reset when `reset` is called without one (None: fresh entropy)."""
    ttyrec_dir: str | None = None
    """Record every game to this folder (NLE's `.ttyrec3.bz2` files and its `xlogfile`; games enter
    the xlogfile when they end), readable by `ftcl.data.ttyrecs`."""

    @field_validator("start")
    @classmethod
    def _known_start(cls, value: str) -> str:
        if not _START.match(value):
            raise ValueError(f"unknown start {value!r}; allowed: game, dlvl2 … dlvl53, sokoban")
        return value

    @field_validator("character")
    @classmethod
    def _four_parts(cls, value: str) -> str:
        if len(value.split("-")) != 4:
            raise ValueError(f"character {value!r} must be role-race-alignment-gender, like mon-hum-neu-mal")
        return value


def _character_options(character: str) -> tuple[str, ...]:
    """NetHack options that pick the character (wizard mode ignores NLE's name-based choice)."""
    role, race, alignment, gender = character.split("-")
    return (f"role:{role}", f"race:{race}", f"align:{alignment}", f"gender:{gender}")


class NetHackEnv(gym.Env):
    """NetHack with the paper's settings and FAR starts (module doc)."""

    metadata = {"render_modes": []}

    def __init__(self, options: dict[str, Any] | Options | None = None):
        from nle import nethack

        self.options = options if isinstance(options, Options) else Options.model_validate(options or {})
        o = self.options
        self._nethack = nethack
        self._agent_actions = len(nethack.ACTIONS)
        # keys the env itself types in wizard mode (the level teleport and its menu), after the agent's
        extra = [int(nethack.WizardCommand.WIZLEVELPORT)] + [ord(c) for c in "?\r0123456789<> yabcdefghijklmnopqrstuvwxzABCDEFGHIJKLMNOPQRSTUVWXYZ"]
        agent = [int(a) for a in nethack.ACTIONS]
        self._keys = agent + [key for key in dict.fromkeys(extra) if key not in agent]
        self._key_index = {key: i for i, key in reversed(list(enumerate(self._keys)))}
        wizard = o.start != "game"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NLE warns that "internal" is requested: the metrics need it
            from nle.env.tasks import NetHackScore

            recording = {} if o.ttyrec_dir is None else {"savedir": o.ttyrec_dir, "save_ttyrec_every": 1}
            self._nle = NetHackScore(
                **recording, character=o.character, actions=tuple(self._keys), wizard=wizard, allow_all_yn_questions=True,
                allow_all_modes=True, max_episode_steps=o.max_episode_steps + 1000,
                options=tuple(nethack.NETHACKOPTIONS) + _character_options(o.character),
                observation_keys=("tty_chars", "tty_colors", "tty_cursor", "blstats", "glyphs", "message", "internal"),
            )
        self.action_space = gym.spaces.Discrete(self._agent_actions)
        self.observation_space = gym.spaces.Dict({
            "tty": gym.spaces.Box(0, 255, (3, *SCREEN), np.uint8),
            "prev_action": gym.spaces.Box(-1, self._agent_actions - 1, (), np.int64),
        })
        self._games: np.random.Generator | None = None
        self._first_reset = True
        self._last: dict[str, np.ndarray] = {}
        self._metrics: dict[str, float] = {}
        self._explored: dict[tuple[int, int], int] = {}
        self._start_score = 0
        self._steps = self._no_progress = 0

    # ---- observations and metrics ----
    def _observation(self, raw: dict[str, np.ndarray], prev_action: int = -1) -> dict[str, np.ndarray]:
        return {"tty": tty_observation(raw["tty_chars"], raw["tty_colors"], raw["tty_cursor"]),
                "prev_action": np.asarray(prev_action, np.int64)}

    def _track(self, previous: dict[str, np.ndarray] | None, raw: dict[str, np.ndarray]) -> None:
        """Update the episode's metrics; `previous` holds copies of the last step's `blstats` and
        `internal` (NLE updates its observation arrays in place)."""
        nh, blstats, m = self._nethack, raw["blstats"], self._metrics
        if not blstats.any():  # before the game starts and after it ends blstats are zero
            return
        m["score"] = float(blstats[nh.NLE_BL_SCORE] - self._start_score)
        m["turns"] = float(blstats[nh.NLE_BL_TIME])
        m["dlvl"] = max(m.get("dlvl", 0.0), float(blstats[nh.NLE_BL_DEPTH]))
        m["xplvl"] = float(blstats[nh.NLE_BL_XP])
        level = (int(blstats[nh.NLE_BL_DNUM]), int(blstats[nh.NLE_BL_DLEVEL]))
        self._explored[level] = int(np.sum(raw["glyphs"] != nh.GLYPH_CMAP_OFF))
        m["scout"] = float(sum(self._explored.values()))
        m["staircase"] = m.get("staircase", 0.0) + float(bool(raw["internal"][4]))
        if previous is not None and previous["blstats"].any():
            m["gold"] = m.get("gold", 0.0) + max(0.0, float(blstats[nh.NLE_BL_GOLD] - previous["blstats"][nh.NLE_BL_GOLD]))
            m["eating"] = m.get("eating", 0.0) + max(0.0, float(raw["internal"][7] - previous["internal"][7]))
        message = bytes(raw["message"])
        m["sokoban"] = m.get("sokoban", 0.0) + float(any(text in message for text in PIT_MESSAGES))

    def _info(self) -> dict[str, Any]:
        nh, blstats = self._nethack, self._last["blstats"]
        return {**{key: 0.0 for key in METRICS}, **self._metrics, "steps": float(self._steps),
                "depth": int(blstats[nh.NLE_BL_DEPTH]), "dungeon": int(blstats[nh.NLE_BL_DNUM])}

    # ---- keys the env types itself ----
    def _press(self, key: int | str) -> tuple[dict[str, np.ndarray], float, bool]:
        code = ord(key) if isinstance(key, str) else int(key)
        raw, reward, terminated, truncated, _ = self._nle.step(self._key_index[code])
        self._last = raw
        return raw, float(reward), terminated or truncated

    def _screen_text(self) -> list[str]:
        return [bytes(row).decode("latin-1") for row in self._last["tty_chars"]]

    def _teleport(self) -> None:
        """Wizard mode: Ctrl-V to the depth of `start`, or through the menu to Sokoban's entry."""
        nh = self._nethack
        self._press(nh.WizardCommand.WIZLEVELPORT)
        if self.options.start.startswith("dlvl"):
            for key in self.options.start[4:] + "\r":
                self._press(key)
            return
        for key in "?\r":
            self._press(key)
        for _ in range(4):  # the menu's pages
            for line in self._screen_text():
                found = re.match(r"^\s*([a-zA-Z]) - \s*soko4:", line)
                if found:
                    self._press(found.group(1))
                    return
            self._press(">")
        raise RuntimeError("the level-teleport menu lists no soko4 (Sokoban's entry level)")

    def _answer_die_question(self, raw: dict[str, np.ndarray], reward: float, done: bool):
        """Wizard mode asks "Die?" at a death; the env answers yes, so the death stands."""
        while not done and (b"Die?" in bytes(raw["message"]) or b"Die?" in bytes(raw["tty_chars"][0])):
            raw, more, done = self._press("y")
            reward += more
        return raw, reward, done

    # ---- gym API ----
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and self._first_reset:
            seed = self.options.seed
        self._first_reset = False
        super().reset(seed=seed)
        if seed is not None or self._games is None:
            self._games = np.random.default_rng(seed)
        core, disp = (int(v) for v in self._games.integers(1, 2**62, size=2))
        self._nle.seed(core, disp, False)
        self._last, _ = self._nle.reset()
        if self.options.start != "game":
            self._teleport()
            depth = int(self._last["blstats"][self._nethack.NLE_BL_DEPTH])
            if self.options.start == "sokoban" and int(self._last["blstats"][self._nethack.NLE_BL_DNUM]) != SOKOBAN_DUNGEON:
                raise RuntimeError(f"the teleport to Sokoban landed in dungeon {self._last['blstats'][self._nethack.NLE_BL_DNUM]}")
            if self.options.start.startswith("dlvl") and depth != int(self.options.start[4:]):
                raise RuntimeError(f"the teleport to {self.options.start} landed on depth {depth}")
        self._metrics, self._explored = {}, {}
        self._start_score = int(self._last["blstats"][self._nethack.NLE_BL_SCORE])
        self._steps = self._no_progress = 0
        self._track(None, self._last)
        return self._observation(self._last), self._info()

    def step(self, action: int):
        if not 0 <= int(action) < self._agent_actions:
            raise ValueError(f"action {action} is outside the {self._agent_actions} actions")
        previous = {key: self._last[key].copy() for key in ("blstats", "internal")}
        raw, reward, terminated, truncated, _ = self._nle.step(int(action))
        self._last = raw
        done = terminated or truncated
        if self.options.start != "game":
            raw, reward, done = self._answer_die_question(raw, float(reward), done)
            terminated = terminated or done
        self._steps += 1
        turn = self._nethack.NLE_BL_TIME
        self._no_progress = self._no_progress + 1 if raw["blstats"][turn] == previous["blstats"][turn] else 0
        self._track(previous, raw)
        truncated = not terminated and (self._steps >= self.options.max_episode_steps
                                        or self._no_progress >= self.options.no_progress_timeout)
        return self._observation(raw, int(action)), float(reward), bool(terminated), bool(truncated), self._info()

    def quit_game(self) -> None:
        """End the current game inside NetHack (#quit, yes), as a player would. A game truncated by
        the env goes on in NLE and is never written to the xlogfile; quitting writes it, so a
        recording (`ttyrec_dir`) of a truncated game is complete and readable. A prompt or menu left
        open is escaped first."""
        done = False
        for key in [27, 27, 27] + list("#quit\r"):
            if done:
                return
            _, _, done = self._press(key)
        for _ in range(30):  # "Really quit?" and the game's closing prompts ("identified?", "--More--")
            if done:
                return
            top = bytes(self._last["tty_chars"][0])
            _, _, done = self._press("y" if b"Really quit" in top else "q" if b"[ynq]" in top else "\r")
        raise RuntimeError(f"NetHack did not end the game after #quit; its top line: {top.decode('latin-1').strip()!r}")

    def render_frame(self) -> np.ndarray:
        """The terminal as a picture, (24·14, 80·8, 3) uint8: each character in its NLE colour on
        black, in an 8×14 cell (a monospace grid whatever the font), the cursor's cell underlined."""
        from PIL import Image, ImageDraw, ImageFont

        chars, colors = self._last["tty_chars"], self._last["tty_colors"]
        image = Image.new("RGB", (COLUMNS_PX * chars.shape[1], ROW_PX * chars.shape[0]))
        draw, font = ImageDraw.Draw(image), ImageFont.load_default()
        for row, column in zip(*np.nonzero(chars > 32)):
            colour = TTY_PALETTE[int(colors[row, column]) & 15]
            draw.text((column * COLUMNS_PX, row * ROW_PX), chr(int(chars[row, column])), fill=colour, font=font)
        row, column = (int(v) for v in self._last["tty_cursor"])
        draw.line([(column * COLUMNS_PX, (row + 1) * ROW_PX - 1), ((column + 1) * COLUMNS_PX - 1, (row + 1) * ROW_PX - 1)],
                  fill=(255, 255, 255))
        return np.asarray(image, dtype=np.uint8)

    def close(self):
        self._nle.close()


COLUMNS_PX, ROW_PX = 8, 14
TTY_PALETTE = [(96, 96, 96), (170, 0, 0), (0, 170, 0), (170, 85, 0), (0, 0, 170), (170, 0, 170), (0, 170, 170),
               (170, 170, 170), (85, 85, 85), (255, 85, 85), (85, 255, 85), (255, 255, 85), (85, 85, 255),
               (255, 85, 255), (85, 255, 255), (255, 255, 255)]
"""NLE's 16 colours (CLR_BLACK … CLR_WHITE) as a terminal shows them; black is drawn dark grey."""


METRICS = ("score", "turns", "dlvl", "xplvl", "gold", "eating", "scout", "staircase", "sokoban")


def make_env(options: dict[str, Any]) -> gym.Env:
    return NetHackEnv(options)


def episode_metrics(last_info: dict[str, Any]) -> dict[str, float]:
    """Per training episode: the Table-4 metrics of its last step."""
    return {key: float(last_info.get(key, 0.0)) for key in METRICS + ("steps",)}


def evaluation_suites(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`full`: a new game. `dlvl4` and `sokoban`: the FAR starts of paper Fig. 5 (module doc)."""
    return {"full": {"start": "game"}, "dlvl4": {"start": "dlvl4"}, "sokoban": {"start": "sokoban"}}
