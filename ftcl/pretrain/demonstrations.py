"""Scripted-expert demonstrations for pre-training π* (an ftcl addition; the paper trains π* by SAC alone).

SAC from scratch needs hours on a few CPU cores to solve RoboticSequence's FAR stages
(results/robotic_sequence_pretrain.md). With `pretrained.train.demonstrations`, the pre-training
stage first rolls out the env's scripted expert (Meta-World's hand-written policies) and then runs
SAC with a BC term toward those demonstrations (`bc` with `teacher_labels: dataset`):

    L_actor(θ) = E_s[α log π_θ(a|s) − min_j Q_j(s, a)] + λ_demo · E_{s∼D} KL(π_E(·|s) ‖ π_θ(·|s))

where π_E(·|s) is the expert's action a_E(s) as a narrow pre-squash Gaussian:
μ_E = atanh(clip(a_E, ±(1 − ε))), log σ_E = `label_log_std`. The executed actions carry Gaussian
noise (`action_noise`) so that D covers states slightly off the expert's path.
The result is still a SAC policy with its own trained critics, exported exactly like any π*.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from ftcl.pretrain.data import collect_transitions

SQUASH_EPSILON = 1e-2
"""Expert actions at ±1 map to atanh(±0.99) ≈ ±2.65 before the tanh squashing."""


def expert_distribution_inputs(action: np.ndarray, label_log_std: float) -> np.ndarray:
    """[μ, log σ] of the pre-squash Gaussian that stands for a deterministic expert action."""
    mean = np.arctanh(np.clip(action, -1.0 + SQUASH_EPSILON, 1.0 - SQUASH_EPSILON))
    return np.concatenate([mean, np.full_like(mean, label_log_std)]).astype(np.float32)


def collect_demonstrations(
    expert: Any,
    env: gym.Env,
    num_transitions: int,
    seed: int,
    action_noise: float,
    label_log_std: float,
) -> dict[str, np.ndarray]:
    """Roll out `expert.action(obs)` plus N(0, action_noise²) noise; labels are the noise-free actions."""
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high

    def act(observation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        intended = expert.action(observation)
        executed = np.clip(intended + action_noise * rng.standard_normal(intended.shape), low, high)
        return executed.astype(np.float32), expert_distribution_inputs(intended, label_log_std)

    return collect_transitions(act, env, num_transitions, seed)

