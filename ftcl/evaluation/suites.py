"""Evaluation suites: run the current policy from a suite's start condition (FAR or CLOSE states).

A suite is a set of env-option overrides declared by the env (e.g. AppleRetrieval `far` starts in
Phase 2 at the apple; RoboticSequence `stage_3_push-wall-v3` starts at that stage). Evaluation
runs whole episodes with the RLModule's inference path, in the trial's own process, and reports
success rate, mean return and mean length. Dict observations and recurrent modules (NetHack's
LSTM: its state starts from the initial state at each episode) are fed as RLlib feeds them.
"""
from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
import tree


def observation_batch(observations: Any) -> Any:
    """A batch of observations as tensors: a dict observation (NetHack's tty and previous action)
    per key; integer arrays keep their dtype (codes, actions), everything else becomes float32."""
    if isinstance(observations, dict):
        return {key: observation_batch(value) for key, value in observations.items()}
    array = np.asarray(observations)
    return torch.as_tensor(array if np.issubdtype(array.dtype, np.integer) else array.astype(np.float32))


def initial_state_batch(module: Any, batch_size: int) -> Any:
    """A stateful module's initial state with a batch axis (None for a feed-forward module)."""
    if not module.is_stateful():
        return None
    return tree.map_structure(lambda s: s[None].expand(batch_size, *s.shape).clone(), module.get_initial_state())


def policy_actions(module: Any, observations: Any, explore: bool, state: Any = None) -> Any:
    """Actions of an RLlib RLModule for a batch of observations (greedy unless `explore`).

    A stateful module takes its recurrent `state` (`initial_state_batch` at an episode's start) and
    a time axis of one step, as RLlib's EnvRunners feed it; then (actions, next state) is returned.
    """
    from ray.rllib.core.columns import Columns

    with torch.no_grad():
        batch = {Columns.OBS: observation_batch(observations)}
        if state is not None:
            batch = {Columns.OBS: tree.map_structure(lambda x: x[:, None], batch[Columns.OBS]), Columns.STATE_IN: state}
        if explore:
            out = module.forward_exploration(batch)
            dist_cls = module.get_exploration_action_dist_cls()
        else:
            out = module.forward_inference(batch)
            dist_cls = module.get_inference_action_dist_cls()
        if Columns.ACTIONS in out:
            actions = out[Columns.ACTIONS]
        else:
            inputs = out[Columns.ACTION_DIST_INPUTS]
            dist = dist_cls.from_logits(inputs[:, 0] if state is not None else inputs)
            actions = dist.sample() if explore else dist.to_deterministic().sample()
    if state is not None:
        return actions.cpu().numpy(), out[Columns.STATE_OUT]
    return actions.cpu().numpy()


EVALUATION_SEED_BASE = 10_000
"""Trials evaluate with seed EVALUATION_SEED_BASE + their seed (`ftcl evaluate` uses the same)."""


def evaluate_policy(
    module: Any,
    make_env: Callable[[], gym.Env],
    episodes: int,
    seed: int,
    explore: bool = False,
    on_frame: Callable[[int, gym.Env], None] | None = None,
) -> dict[str, float]:
    """Success rate (`info["success"]` at episode end), mean return and length over `episodes`.
    `on_frame(episode, env)` is called after the reset and after every step (a video recorder)."""
    env = make_env()
    returns, lengths, successes = [], [], []
    try:
        for episode in range(episodes):
            obs, info = env.reset(seed=seed + episode)
            if on_frame is not None:
                on_frame(episode, env)
            done, episode_return, length, success = False, 0.0, 0, False
            state = initial_state_batch(module, 1)
            while not done:
                one = tree.map_structure(lambda x: np.asarray(x)[None], obs)
                if state is None:
                    action = policy_actions(module, one, explore)[0]
                else:
                    actions, state = policy_actions(module, one, explore, state)
                    action = actions[0]
                obs, reward, terminated, truncated, info = env.step(action)
                if on_frame is not None:
                    on_frame(episode, env)
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
