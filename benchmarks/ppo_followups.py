"""RetentionPPO against SB3 PPO window by window, and a pyinstrument profile of RetentionPPO.train().

Both on CartPole with the PPO table's sizes (2×64 tanh, 4000 steps/iteration, minibatch 128,
10 epochs) and 0 env runners × `num_envs` envs; RetentionPPO as configured by default.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

from benchmarks.common import PPO_BATCH, Row, ray_session
from benchmarks.ftcl_rllib import env_steps_sampled, ppo_config


def vs_sb3_rows(num_envs: int, repeats: int) -> list[Row]:
    """Env steps/s per window of one `train()` (ftcl) and one `learn(4000)` (SB3), interleaved."""
    import torch

    from benchmarks import sb3_peers

    with ray_session():
        algo = ppo_config(0, num_envs).build_algo()
        torch.set_num_threads(1)
        try:
            def step_ftcl() -> float:
                start, before = time.perf_counter(), env_steps_sampled(algo)
                algo.train()
                return (env_steps_sampled(algo) - before) / (time.perf_counter() - start)

            model = sb3_peers.ppo_model(num_envs)
            model.learn(total_timesteps=PPO_BATCH)

            def step_sb3() -> float:
                start = time.perf_counter()
                model.learn(total_timesteps=PPO_BATCH, reset_num_timesteps=False)
                return PPO_BATCH / (time.perf_counter() - start)

            steps: dict[tuple[str, str], Callable[[], float]] = {
                ("ftcl RetentionPPO", "finetune"): step_ftcl, ("SB3 PPO", "-"): step_sb3,
            }
            for step in steps.values():  # warm-up
                step()
            rates: dict[tuple[str, str], list[float]] = {key: [] for key in steps}
            for _ in range(repeats):
                for key, step in steps.items():
                    rates[key].append(step())
        finally:
            algo.stop()
    sb3 = statistics.median(rates[("SB3 PPO", "-")])
    rows = []
    for (system, method), values in rates.items():
        median = statistics.median(values)
        ratio = f"{median / sb3:.2f}× SB3; " if system != "SB3 PPO" else ""
        setting = (f"{num_envs} env(s), 1 learn({PPO_BATCH})/window" if system == "SB3 PPO"
                   else f"0 env runners × {num_envs} envs, 1 train()/window")
        rows.append(Row("ppo-vs-sb3", system, "CartPole-v1", method, setting + ", interleaved", median, None, None, repeats,
                        note=ratio + "windows: " + ", ".join(f"{x:,.0f}" for x in values)))
    return rows


def profile_rows(num_envs: int, iterations: int = 2) -> list[Row]:
    """Print pyinstrument's profile (0.5 ms sampling) of `iterations` RetentionPPO.train() calls."""
    import torch
    from pyinstrument import Profiler

    with ray_session():
        algo = ppo_config(0, num_envs).build_algo()
        torch.set_num_threads(1)
        try:
            algo.train()  # warm-up
            profiler = Profiler(interval=0.0005)
            profiler.start()
            start = time.perf_counter()
            for _ in range(iterations):
                algo.train()
            wall = (time.perf_counter() - start) / iterations
            profiler.stop()
        finally:
            algo.stop()
    print(profiler.output_text(unicode=False, color=False, show_all=False, timeline=False))
    return [Row("ppo-profile", "ftcl RetentionPPO", "CartPole-v1", "finetune",
                f"0 env runners × {num_envs} envs, under pyinstrument", PPO_BATCH / wall, None, None, iterations,
                note=f"{1000 * wall:,.0f} ms/iteration under the profiler")]
