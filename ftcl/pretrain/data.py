"""Collecting π*'s retention data: its transitions and distribution inputs, rolled out in the env.

The rows have the keys of `ftcl.data.retention_data` (saved there as one .npz).

Actions are stored as the policy emits them (for a Box action space with normalised actions:
in [-1, 1], as RLlib's episodes and replay buffers keep them); the env receives them rescaled
to its bounds, as RLlib's module-to-env connector does.
"""
from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch

from ftcl.data.retention_data import ALL_KEYS
from ftcl.retention.policy_api import RetentionPolicyAPI


def _env_action(action: np.ndarray, space: gym.Space, normalize_actions: bool) -> Any:
    """The action handed to the env: ints for Discrete, rescaled from [-1, 1] for Box."""
    if isinstance(space, gym.spaces.Discrete):
        return int(action)
    if normalize_actions:
        # low + (a + 1)·(high − low)/2, with a clipped to [-1, 1]
        clipped = np.clip(action, -1.0, 1.0)
        return (space.low + (clipped + 1.0) * (space.high - space.low) / 2.0).astype(space.dtype)
    return np.clip(action, space.low, space.high).astype(space.dtype)


@torch.no_grad()
def collect_policy_data(
    module: Any,
    env: gym.Env,
    num_transitions: int,
    seed: int,
    explore: bool = True,
    normalize_actions: bool = True,
) -> dict[str, np.ndarray]:
    """Roll out an RLModule (π*) in `env` for `num_transitions` steps; returns the arrays above.

    explore=True samples from π*'s exploration distribution, False takes its deterministic
    action. `action_dist_inputs` are stored as the policy samples from them (e.g. log σ clamped
    where RLlib's distribution clamps it). Episodes are reset (seeded from `seed`) whenever they terminate or truncate.
    """
    from ray.rllib.core.columns import Columns  # the module is an RLlib RLModule

    device = next(iter(module.parameters()), torch.zeros(())).device if hasattr(module, "parameters") else "cpu"

    stores_as_sampled = isinstance(module, RetentionPolicyAPI)

    def act(observation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        obs_tensor = torch.as_tensor(np.asarray(observation, dtype=np.float32), device=device)[None]
        batch = {Columns.OBS: obs_tensor}
        if explore:
            inputs = module.forward_exploration(batch)[Columns.ACTION_DIST_INPUTS]
            action = module.get_exploration_action_dist_cls().from_logits(inputs).sample()
        else:
            inputs = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
            action = module.get_inference_action_dist_cls().from_logits(inputs).to_deterministic().sample()
        if stores_as_sampled:  # stored as the policy samples from them
            inputs = module.sampled_distribution_inputs(inputs)
        return action[0].cpu().numpy(), inputs[0].cpu().numpy()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return collect_transitions(act, env, num_transitions, seed, normalize_actions)


def _stored(observation: Any) -> np.ndarray:
    """Observations as stored: integer images (Atari frames) keep their dtype, the rest float32."""
    array = np.asarray(observation)
    return array if np.issubdtype(array.dtype, np.integer) else array.astype(np.float32)


def collect_transitions(
    act: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    env: gym.Env,
    num_transitions: int,
    seed: int,
    normalize_actions: bool = True,
) -> dict[str, np.ndarray]:
    """Roll out `act(obs) -> (action, action_dist_inputs)` for `num_transitions` steps (module doc keys).

    Episodes are reset (seeded from `seed`, then seed + k for the k-th episode) whenever they end.
    """
    if num_transitions <= 0:
        raise ValueError(f"num_transitions must be positive; got {num_transitions}")
    rows: dict[str, list[np.ndarray]] = {key: [] for key in ALL_KEYS}
    observation, _ = env.reset(seed=seed)
    episode = 0
    while len(rows["obs"]) < num_transitions:
        action, inputs = act(observation)
        next_observation, reward, terminated, truncated, info = env.step(
            _env_action(action, env.action_space, normalize_actions)
        )
        # RoboticSequence: a solved intermediate stage is terminal for the critic (no bootstrap,
        # paper §2.3) although the episode goes on; store it as such for episodic memory.
        stage_done = bool(info.get("stage_done", False)) and not truncated
        rows["obs"].append(_stored(observation))
        rows["actions"].append(np.asarray(action))
        rows["rewards"].append(np.float32(reward))
        rows["next_obs"].append(_stored(next_observation))
        rows["terminateds"].append(np.bool_(terminated or stage_done))
        rows["truncateds"].append(np.bool_(truncated))
        rows["action_dist_inputs"].append(np.asarray(inputs, dtype=np.float32))
        if terminated or truncated:
            episode += 1
            observation, _ = env.reset(seed=seed + episode)
        else:
            observation = next_observation
    # the last row ends the collection: mark it truncated so episodes never run across files
    rows["truncateds"][-1] = np.bool_(True) if not rows["terminateds"][-1] else rows["truncateds"][-1]
    return {key: np.stack(values) for key, values in rows.items()}
