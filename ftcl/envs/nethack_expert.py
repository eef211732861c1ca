"""A scripted NetHack expert that reads only the terminal, as the agent does: a "diver" that goes
down the dungeon as fast as it can (the imperfect-cloning experiment's expert, issue 13 item 7).

Each step it reads the screen of `ftcl.envs.nethack`'s observation (row 0 the message, rows 1–21
the map, rows 22–23 the status) and picks one of the env's actions:
1. "--More--" or a menu on screen: Enter (Escape for a menu); a yes/no question: "y" to pray's and
   eat's confirmations, "n" to anything else (attacking a peaceful, for one);
2. Weak or Fainting from hunger: eat (the first food the prompt offers); HP below a third: pray,
   at most once per 1,000 turns, else search in place to rest;
3. a monster next to it (a letter, or `@` other than itself): attack by moving into it;
4. standing on a down staircase: go down (">");
5. a down staircase seen on this level: step along the shortest path to it (BFS over the cells
   it remembers as walkable: no diagonal moves through doorways, no traps, water or boulders);
6. else step toward the nearest unexplored edge (a walkable cell it has not stood on, next to a
   blank one);
7. nothing left to explore: search ("s") where it stands, then at other dead ends; a closed
   door it walked into and that stayed shut is kicked.
It keeps a map per dungeon level (what it saw under monsters and itself stays known) and counts
searches per cell. It has memory the agent lacks (a feed-forward clone sees one screen), which is
part of why a clone of it is imperfect.
"""
from __future__ import annotations

import re
from collections import deque

import numpy as np

MAP_TOP, MAP_ROWS, COLUMNS = 1, 21, 80
WALKABLE = set(".#<>_{") | set(")[%?!/=\"(*$") | {"|", "-"}  # floor, stairs, altars, fountains, items on the
# floor; '|' / '-' only when they are open doors (checked by colour)
DOOR_COLOUR = 3  # brown: doors (open '|'/'-' and closed '+')
AVOID = set("^}0`~")  # traps, water, boulders (`0` with the boulder option, '`' by default), lava
DIRECTIONS = {(-1, 0): "k", (1, 0): "j", (0, -1): "h", (0, 1): "l", (-1, -1): "y", (-1, 1): "u", (1, -1): "b", (1, 1): "n"}
TERRAIN_CODES = np.frombuffer(b".#<>_{|-+^}0`~)[%?!/=\"(*$", np.uint8)
"""What the map keeps under monsters and the player: terrain and items (not monsters, not blanks)."""
FOOD_PROMPT = re.compile(r"What do you want to eat\? \[([a-zA-Z])")


class DescendBot:
    """The diver of the module doc; `action(obs)` -> an index in the env's action set."""

    def __init__(self, seed: int = 0):
        from nle import nethack

        self._index = {int(a): i for i, a in reversed(list(enumerate(nethack.ACTIONS)))}
        self._pray, self._kick = self._index[int(nethack.Command.PRAY)], self._index[int(nethack.Command.KICK)]
        self._rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        self._levels: dict[int, dict] = {}
        self._last_turn = -1
        self._last_prayer = -10_000
        self._pending: list[str] = []
        self._peaceful_until = -1

    def _key(self, char: str) -> int:
        return self._index[ord(char)]

    # ---------------------------------------------------------------- reading the screen
    @staticmethod
    def _status(lines: list[str]) -> dict[str, int]:
        text = lines[22] + " " + lines[23]
        values = {name: int(match.group(1)) for name, pattern in (("dlvl", r"Dlvl:(\d+)"), ("turn", r"T:(\d+)"))
                  if (match := re.search(pattern, text))}
        hp = re.search(r"HP:(\d+)\((\d+)\)", text)
        values["hp"], values["max_hp"] = (int(hp.group(1)), int(hp.group(2))) if hp else (1, 1)
        values["weak"] = int("Weak" in text or "Fainting" in text)
        return values

    def _level(self, depth: int) -> dict:
        return self._levels.setdefault(depth, {"seen": np.full((MAP_ROWS, COLUMNS), ord(" "), np.uint8), "door": np.zeros((MAP_ROWS, COLUMNS), bool),
                                               "searched": np.zeros((MAP_ROWS, COLUMNS), int), "bumped": {},
                                               "visited": np.zeros((MAP_ROWS, COLUMNS), bool)})

    # ---------------------------------------------------------------- acting
    def action(self, observation: dict[str, np.ndarray]) -> int:
        """The next key for the env's observation (`ftcl.envs.nethack`: its `tty` is what the diver reads)."""
        chars, colours, cursor = observation["tty"]
        lines = [bytes(row).decode("latin-1") for row in chars]
        top = lines[0]
        if self._pending:
            return self._key(self._pending.pop(0))
        if "--More--" in "".join(lines):
            return self._key("\r")
        if re.search(r"\[[yn]{2}q?\]|\[ynq\]", top):
            if "Really attack" in top:  # a peaceful monster: leave it for a while
                self._peaceful_until = self._last_turn + 10
            return self._key("y" if ("pray" in top or "eat" in top) else "n")
        if (food := FOOD_PROMPT.search(top)) is not None:
            return self._key(food.group(1))
        if "What do you want to eat?" in top or top.rstrip().endswith("?") and "[" in top:
            return self._key("\x1b")
        if any("(end)" in line or re.search(r"\(\d+ of \d+\)", line) for line in lines):
            return self._key("\x1b")
        status = self._status(lines)
        if status.get("turn", 0) < self._last_turn:  # a new game
            self.reset()
        self._last_turn = status.get("turn", 0)
        level = self._level(status.get("dlvl", 1))
        here = self._player(chars, cursor)
        self._remember(level, chars, colours, here)
        if status["weak"]:
            return self._key("e")
        if status["hp"] * 3 < status["max_hp"]:
            if self._last_turn - self._last_prayer > 1000:
                self._last_prayer = self._last_turn
                return self._pray
            return self._key("s")
        if here is None:
            return self._key("s")
        target = self._adjacent_monster(chars, here) if self._last_turn > self._peaceful_until else None
        if target is not None:
            return self._key(DIRECTIONS[target])
        if level["seen"][here] == ord(">"):
            return self._key(">")
        step = self._step_toward(level, here, lambda cell: level["seen"][cell] == ord(">"))
        if step is None:
            step = self._step_toward(level, here, lambda cell: self._is_frontier(level, cell))
        if step is None:
            return self._search_or_wander(level, here)
        target_cell = (here[0] + step[0], here[1] + step[1])
        if chars[target_cell[0] + MAP_TOP, target_cell[1]] == ord("+"):  # a closed door: open it by walking, kick if stuck
            bumps = level["bumped"].get(target_cell, 0) + 1
            level["bumped"][target_cell] = bumps
            if bumps > 3:
                self._pending = [DIRECTIONS[step]]
                return self._kick
        return self._key(DIRECTIONS[step])

    def _player(self, chars: np.ndarray, cursor: np.ndarray) -> tuple[int, int] | None:
        where = np.argwhere(cursor > 0)
        if len(where):
            row, col = int(where[0][0]) - MAP_TOP, int(where[0][1])
            if 0 <= row < MAP_ROWS and chars[row + MAP_TOP, col] == ord("@"):
                return row, col
        players = np.argwhere(chars[MAP_TOP:MAP_TOP + MAP_ROWS] == ord("@"))
        return (int(players[0][0]), int(players[0][1])) if len(players) else None

    def _remember(self, level: dict, chars: np.ndarray, colours: np.ndarray, here: tuple[int, int] | None) -> None:
        shown = chars[MAP_TOP:MAP_TOP + MAP_ROWS]
        known = np.isin(shown, TERRAIN_CODES)
        level["seen"][known] = shown[known]
        level["door"][known] = colours[MAP_TOP:MAP_TOP + MAP_ROWS][known] == DOOR_COLOUR
        if here is not None:
            level["visited"][here] = True
            if level["seen"][here] == ord(" "):
                level["seen"][here] = ord(".")  # where it stands is floor at least

    def _walkable(self, level: dict, cell: tuple[int, int]) -> bool:
        char = chr(level["seen"][cell])
        if char in ("|", "-"):
            return bool(level["door"][cell])
        return char in WALKABLE or char == "+"

    def _is_frontier(self, level: dict, cell: tuple[int, int]) -> bool:
        """A walkable cell it has not stood on, next to a blank one (a corridor's or doorway's way on)."""
        row, col = cell
        if level["visited"][cell] or not self._walkable(level, cell):
            return False
        for dr, dc in DIRECTIONS:
            r, c = row + dr, col + dc
            if 0 <= r < MAP_ROWS and 0 <= c < COLUMNS and level["seen"][r, c] == ord(" "):
                return True
        return False

    def _step_toward(self, level: dict, start: tuple[int, int], goal) -> tuple[int, int] | None:
        """The first step of a shortest path from `start` to a cell where `goal(cell)`, or None."""
        previous = {start: None}
        queue = deque([start])
        while queue:
            cell = queue.popleft()
            if cell != start and goal(cell):
                while previous[cell] != start:
                    cell = previous[cell]
                return cell[0] - start[0], cell[1] - start[1]
            for dr, dc in DIRECTIONS:
                nxt = (cell[0] + dr, cell[1] + dc)
                if not (0 <= nxt[0] < MAP_ROWS and 0 <= nxt[1] < COLUMNS) or nxt in previous:
                    continue
                diagonal = dr != 0 and dc != 0
                if not self._walkable(level, nxt) or chr(level["seen"][nxt]) in AVOID:
                    continue
                if diagonal and (level["door"][cell] or level["door"][nxt] or level["seen"][nxt] == ord("+")):
                    continue  # no diagonal moves into or out of doorways
                previous[nxt] = cell
                queue.append(nxt)
        return None

    def _search_or_wander(self, level: dict, here: tuple[int, int]) -> int:
        if level["searched"][here] < 15:
            level["searched"][here] += 1
            return self._key("s")
        step = self._step_toward(level, here, lambda cell: level["searched"][cell] < 15 and self._dead_end(level, cell))
        if step is None:
            step = list(DIRECTIONS)[int(self._rng.integers(8))]
        return self._key(DIRECTIONS[step])

    def _dead_end(self, level: dict, cell: tuple[int, int]) -> bool:
        open_neighbours = sum(self._walkable(level, (cell[0] + dr, cell[1] + dc)) for dr, dc in DIRECTIONS
                              if 0 <= cell[0] + dr < MAP_ROWS and 0 <= cell[1] + dc < COLUMNS)
        return open_neighbours <= 2

    @staticmethod
    def _adjacent_monster(chars: np.ndarray, here: tuple[int, int]) -> tuple[int, int] | None:
        for (dr, dc) in DIRECTIONS:
            r, c = here[0] + dr, here[1] + dc
            if 0 <= r < MAP_ROWS and 0 <= c < COLUMNS:
                char = chr(chars[r + MAP_TOP, c])
                if char.isalpha() or char in "@&;:'":
                    return dr, dc
        return None


def evaluate(start: str = "game", games: int = 20, steps: int = 5000, seed: int = 100) -> list[float]:
    """The deepest dungeon level of each of `games` seeded games played by the diver."""
    from ftcl.envs.nethack import NetHackEnv

    env = NetHackEnv({"seed": seed, "start": start, "max_episode_steps": steps})
    bot, depths = DescendBot(0), []
    for _ in range(games):
        obs, info = env.reset()
        bot.reset()
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(bot.action(obs))
            done = terminated or truncated
        depths.append(info["dlvl"])
    env.close()
    return depths


if __name__ == "__main__":  # python -m ftcl.envs.nethack_expert [start] [games]
    import sys

    found = evaluate(*(sys.argv[1:2] or ["game"]), *(int(a) for a in sys.argv[2:3]))
    print("deepest levels", found)
    print(", ".join(f">= {d}: {np.mean(np.asarray(found) >= d):.2f}" for d in range(2, 8)))
