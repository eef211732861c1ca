"""Raw env steps/s with a random policy: RoboticSequence stages, CartPole, Montezuma (ALE), NetHack (NLE)."""
from __future__ import annotations

import os
import time
from typing import Any, Callable

from benchmarks.common import Row, median_rate, robotic_sequence_env


def random_policy_rates(make: Callable[[], Any], steps: int, repeats: int) -> list[float]:
    """Env steps/s of a random policy per timed window (resets counted inside the window)."""
    env = make()
    env.action_space.seed(0)
    env.reset(seed=0)
    rates = []
    for _ in range(repeats + 1):  # the first window is the warm-up
        start = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
        rates.append(steps / (time.perf_counter() - start))
    env.close()
    return rates[1:]


def montezuma() -> Any:
    import gymnasium as gym
    import ale_py

    gym.register_envs(ale_py)
    return gym.make("ALE/MontezumaRevenge-v5")


def nethack() -> Any:
    import gymnasium as gym

    os.environ.setdefault("USER", "ftcl")
    import nle  # noqa: F401  (registers the NetHack envs)

    return gym.make("NetHackScore-v0")


def env_rows(steps: int, repeats: int, quick: bool) -> list[Row]:
    """One row per env; an env that fails to build or step gets a 'failed: ...' row instead."""
    import gymnasium as gym

    from ftcl.envs.robotic_sequence import DEFAULT_STAGES

    makers: list[tuple[str, Callable[[], Any]]] = [
        (f"RoboticSequence[{stage}]", lambda stage=stage: robotic_sequence_env(stage)) for stage in DEFAULT_STAGES
    ]
    makers += [("CartPole-v1", lambda: gym.make("CartPole-v1")), ("ALE/MontezumaRevenge-v5", montezuma),
               ("NetHackScore-v0", nethack)]
    count = steps if not quick else max(200, steps // 4)
    rows = []
    for name, make in makers:
        try:
            rates = random_policy_rates(make, count, repeats)
        except Exception as error:  # a missing simulator must not hide the other rows
            rows.append(Row("env", "random policy", name, note=f"failed: {type(error).__name__}: {error}"))
            continue
        rows.append(Row("env", "random policy", name, env_steps_per_s=median_rate(rates), repeats=len(rates),
                        note=f"{count} steps/window"))
    return rows
