"""Gymnasium classic-control envs, for smoke tests and throughput baselines."""
from __future__ import annotations

import gymnasium as gym
from pydantic import BaseModel, ConfigDict


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    max_episode_steps: int = 500


def make_env(options: dict) -> gym.Env:
    return gym.make("CartPole-v1", max_episode_steps=options["max_episode_steps"])
