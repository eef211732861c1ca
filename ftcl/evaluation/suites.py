"""Evaluation suites: run the current policy from a suite's start condition (FAR or CLOSE states).

A suite is a set of env-option overrides declared by the env (e.g. AppleRetrieval `far` starts in
Phase 2 at the apple; RoboticSequence `stage_3_push-wall-v3` starts at that stage). Evaluation
runs whole episodes with the RLModule's inference path, in the trial's own process, and reports
success rate, mean return and mean length.
"""
from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch


def policy_actions(module: Any, observations: np.ndarray, explore: bool) -> np.ndarray:
    """Actions of an RLlib RLModule for a batch of flat observations (greedy unless `explore`)."""
    from ray.rllib.core.columns import Columns

    with torch.no_grad():
        obs = torch.as_tensor(np.asarray(observations, dtype=np.float32))
        if explore:
            out = module.forward_exploration({Columns.OBS: obs})
            dist_cls = module.get_exploration_action_dist_cls()
        else:
            out = module.forward_inference({Columns.OBS: obs})
            dist_cls = module.get_inference_action_dist_cls()
        if Columns.ACTIONS in out:
            actions = out[Columns.ACTIONS]
        else:
            dist = dist_cls.from_logits(out[Columns.ACTION_DIST_INPUTS])
            actions = dist.sample() if explore else dist.to_deterministic().sample()
    return actions.cpu().numpy()


def evaluate_policy(
    module: Any,
    make_env: Callable[[], gym.Env],
    episodes: int,
    seed: int,
    explore: bool = False,
) -> dict[str, float]:
    """Success rate (`info["success"]` at episode end), mean return and length over `episodes`."""
    env = make_env()
    returns, lengths, successes = [], [], []
    try:
        for episode in range(episodes):
            obs, info = env.reset(seed=seed + episode)
            done, episode_return, length, success = False, 0.0, 0, False
            while not done:
                action = policy_actions(module, obs[None], explore)[0]
                obs, reward, terminated, truncated, info = env.step(action)
                episode_return += float(reward)
                length += 1
                success = bool(info.get("success", False))
                done = terminated or truncated
            returns.append(episode_return)
            lengths.append(length)
            successes.append(success)
    finally:
        env.close()
    return {
        "success": float(np.mean(successes)),
        "episode_return_mean": float(np.mean(returns)),
        "episode_len_mean": float(np.mean(lengths)),
    }
