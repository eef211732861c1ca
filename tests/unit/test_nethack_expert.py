"""The scripted diver on the real NLE: it goes down from the game's start, and from the FAR start
on dungeon level 4 it goes deeper (the expert of the imperfect-cloning experiment)."""
from __future__ import annotations

from ftcl.envs.nethack_expert import evaluate


def deepest_levels(start: str, games: int, steps: int) -> list[float]:
    return evaluate(start, games, steps, seed=100)


def test_the_diver_descends_from_the_start_and_from_level_4():
    # measured (20 games of 5,000 steps, seed 100): depth >= 2 in 80 %, >= 4 in 40 %; from dlvl 4, >= 5 in 9 of 10
    from_start = deepest_levels("game", games=6, steps=3000)
    assert sum(depth >= 2 for depth in from_start) >= 3, from_start
    from_level_4 = deepest_levels("dlvl4", games=3, steps=3000)
    assert sum(depth >= 5 for depth in from_level_4) >= 2, from_level_4
