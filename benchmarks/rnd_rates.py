"""PPO + RND throughput on Montezuma's Revenge: ftcl's RetentionPPORND against the plain-PyTorch loop
(`benchmarks.plain_ppo_rnd`) with the same networks, envs and batch shape, timed side by side.

Both run in this process with one torch thread: N envs × 128 steps per iteration, 4 epochs of 4
minibatches. Iterations alternate (plain, ftcl, plain, ftcl, ...) after one warm-up iteration each,
so a change in load hits both; each row is the median over `repeats` iterations and records the
load. The note splits each system's time into sampling (env steps + inference) and learning.
"""
from __future__ import annotations

import statistics
import time

from benchmarks.common import Row, ray_session

ENV_NAME = "MontezumaRevenge (ALE, paper preprocessing)"


def ftcl_algo(num_envs: int):
    from ftcl.algorithms.ppo_rnd import RetentionPPORNDConfig
    from ftcl.trial_config import env_id, register_envs

    register_envs()
    batch = num_envs * 128
    return (RetentionPPORNDConfig().environment(env_id("montezuma"), env_config={})
            .env_runners(num_env_runners=0, num_envs_per_env_runner=num_envs, rollout_fragment_length=128)
            .training(train_batch_size_per_learner=batch, minibatch_size=batch // 4, num_epochs=4, lr=1e-4,
                      gamma=0.999, lambda_=0.95, clip_param=0.1, entropy_coeff=0.001, vf_loss_coeff=0.5,
                      vf_clip_param=1e9, use_kl_loss=False, grad_clip=0.5, grad_clip_by="global_norm",
                      rnd_obs_norm_steps=0)
            .debugging(seed=0, log_level="ERROR")).build_algo()


def rnd_rows(num_envs: int, repeats: int) -> list[Row]:
    from benchmarks.plain_ppo_rnd import PlainPPORND
    from ray.rllib.utils.metrics import ENV_RUNNER_SAMPLING_TIMER, LEARNER_UPDATE_TIMER, TIMERS

    plain = PlainPPORND(num_envs)
    rates: dict[str, list[float]] = {"plain": [], "ftcl": []}
    split: dict[str, list[tuple[float, float]]] = {"plain": [], "ftcl": []}
    loads: dict[str, list[float]] = {"plain": [], "ftcl": []}
    import os

    with ray_session():
        algo = ftcl_algo(num_envs)
        try:
            plain.iteration()
            algo.train()  # warm-up: one iteration each
            for _ in range(repeats):
                before = dict(plain.timings)
                start = time.perf_counter()
                steps = plain.iteration()
                rates["plain"].append(steps / (time.perf_counter() - start))
                split["plain"].append((plain.timings["rollout"] - before["rollout"], plain.timings["update"] - before["update"]))
                loads["plain"].append(os.getloadavg()[0])
                start = time.perf_counter()
                result = algo.train()
                elapsed = time.perf_counter() - start
                rates["ftcl"].append(num_envs * 128 / elapsed)
                timers = result.get(TIMERS, {})
                split["ftcl"].append((float(timers.get(ENV_RUNNER_SAMPLING_TIMER, float("nan"))),
                                      float(timers.get(LEARNER_UPDATE_TIMER, float("nan")))))
                loads["ftcl"].append(os.getloadavg()[0])
        finally:
            algo.stop()
            plain.close()
    plain_rate = statistics.median(rates["plain"])
    rows = []
    for system, label in (("plain", "plain PyTorch (CleanRL-style loop)"), ("ftcl", "ftcl RetentionPPORND (RLlib)")):
        rate = statistics.median(rates[system])
        sampling = statistics.median(s for s, _ in split[system])
        learning = statistics.median(l for _, l in split[system])
        note = f"per iteration: sampling {sampling:.1f} s, learning {learning:.1f} s"
        if system == "ftcl":
            note += f"; {rate / plain_rate:.2f}× the plain loop"
        rows.append(Row("rnd", label, ENV_NAME, "finetune", f"{num_envs} envs × 128 steps, 4 epochs × 4 minibatches",
                        rate, None, None, repeats, round(statistics.median(loads[system]), 2), note))
    return rows
