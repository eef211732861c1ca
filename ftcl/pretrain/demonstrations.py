"""Demonstrations for pre-training π*: a scripted expert's rollouts (an ftcl addition; the paper
trains π* by SAC alone), or a recording the env replays (Montezuma, see its `recorded_demonstrations`).

SAC from scratch needs hours on a few CPU cores to solve RoboticSequence's FAR stages
(results/robotic_sequence_pretrain.md). With `pretrained.train.demonstrations`, the pre-training
stage first rolls out the env's scripted expert (Meta-World's hand-written policies) and then runs
SAC with a BC term toward those demonstrations (`bc` with `teacher_labels: dataset`):

    L_actor(θ) = E_s[α log π_θ(a|s) − min_j Q_j(s, a)] + λ_demo · E_{s∼D} KL(π_E(·|s) ‖ π_θ(·|s))

where π_E(·|s) is the expert's action a_E(s) as a narrow pre-squash Gaussian:
μ_E = atanh(clip(a_E, ±(1 − ε))), log σ_E = `label_log_std`. The executed actions carry Gaussian
noise (`action_noise`) so that D covers states slightly off the expert's path.
The result is still a SAC policy with its own trained critics, exported exactly like any π*.

This module holds the expert's labels and rollouts, the pre-training stage's retention method
(`pretraining_method`), and the once-per-experiment collection of a trial's demonstrations
(`ensure_demonstrations`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from ftcl.plan import TrialPlan, demonstrations_path
from ftcl.data.retention_data import save_retention_data
from ftcl.pretrain.data import collect_transitions
from ftcl.spec import ExperimentSpec

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


def pretraining_method(spec: ExperimentSpec, demonstration_rows: int | None = None) -> dict[str, Any]:
    """The retention method of the pre-training stage: none (`scratch`), or BC toward demonstrations
    (all of them: a recording may hold fewer than `transitions`, `demonstration_rows` says how many)."""
    demonstrations = spec.pretrained.train.demonstrations
    if demonstrations is None:
        return {"name": "scratch"}
    buffer_size = demonstrations.transitions if demonstration_rows is None else min(demonstrations.transitions,
                                                                                      demonstration_rows)
    return {
        "name": "bc",
        "label": f"{spec.algorithm.name}_with_demonstrations",
        "coeff": demonstrations.bc_coeff,
        "buffer_size": buffer_size,
        "batch_size": demonstrations.batch_size,
        "teacher_labels": "dataset",
    }


def ensure_demonstrations(trial: ExperimentSpec, experiment_dir: Path, plan: TrialPlan) -> Path:
    """Collect the scripted-expert demonstrations of a pre-training trial once (kept for resumes)."""
    from ftcl.envs.registry import ENVS

    path = demonstrations_path(experiment_dir, plan.variant_index)
    if path.is_file():
        return path
    settings = trial.pretrained.train.demonstrations
    entry = ENVS[trial.env.name]
    if entry.has_recorded_demonstrations:
        return save_retention_data(path, entry.recorded_demonstrations(trial.env.options, settings, plan.seed))
    env = entry.make(trial.env.options)
    try:
        data = collect_demonstrations(
            entry.scripted_expert(trial.env.options), env, settings.transitions, seed=plan.seed,
            action_noise=settings.action_noise, label_log_std=settings.label_log_std,
        )
    finally:
        env.close()
    return save_retention_data(path, data)
