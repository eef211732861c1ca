"""Environment registry: one entry per environment family that specs can name.

An entry says how to build the gymnasium env from validated options, which pydantic model
validates those options, and which evaluation suites (FAR/CLOSE start conditions) it offers.
Env modules are imported lazily so that `ftcl validate` stays fast and a missing simulator
only matters for the env that needs it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from pydantic import BaseModel


@dataclass(frozen=True)
class EnvEntry:
    """What ftcl knows about one environment family."""

    name: str
    description: str
    module: str  # python module that defines `make_env(options: dict) -> gym.Env` and `Options`
    suites: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Evaluation suites: name -> option overrides applied on top of the training options."""

    def _module(self):
        return importlib.import_module(self.module)

    @property
    def options_model(self) -> type[BaseModel]:
        return self._module().Options

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Validated options with defaults filled in (raises pydantic.ValidationError)."""
        return self.options_model.model_validate(options).model_dump()

    def suites_for(self, options: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Evaluation suites for these (validated) options: the module's `evaluation_suites(options)`
        when it defines one (suites that depend on options, e.g. one per stage), else `suites`."""
        module = self._module()
        if hasattr(module, "evaluation_suites"):
            return dict(module.evaluation_suites(options))
        return dict(self.suites)

    def suite_state_mask(self, options: dict[str, Any], suite: str, observations: np.ndarray) -> np.ndarray:
        """Which rows of `observations` are states of `suite` (the module's `suite_state_mask(options,
        suite_overrides, observations)` when it defines one, else every row)."""
        module = self._module()
        if hasattr(module, "suite_state_mask"):
            overrides = self.suites_for(options)[suite]
            return np.asarray(module.suite_state_mask(options, overrides, observations), dtype=bool)
        return np.ones(len(observations), dtype=bool)

    @property
    def has_scripted_expert(self) -> bool:
        """Whether the env module offers `scripted_expert(options)` (demonstrations for pre-training)."""
        return hasattr(self._module(), "scripted_expert")

    @property
    def has_recorded_demonstrations(self) -> bool:
        """Whether the env module offers `recorded_demonstrations(options, settings, seed)`: demonstration
        transitions replayed from a recording (Montezuma: a human demonstration) instead of an expert policy."""
        return hasattr(self._module(), "recorded_demonstrations")

    def recorded_demonstrations(self, options: dict[str, Any], settings: Any, seed: int) -> dict[str, np.ndarray]:
        return self._module().recorded_demonstrations(self.validate_options(options), settings, seed)

    def scripted_expert(self, options: dict[str, Any]) -> Any:
        """The env's scripted expert (an object with `action(obs)`) for these options."""
        return self._module().scripted_expert(self.validate_options(options))

    def make(self, options: dict[str, Any]) -> gym.Env:
        return self._module().make_env(self.validate_options(options))

    def creator(self) -> Callable[[dict], gym.Env]:
        """An env creator for `ray.tune.register_env` (RLlib passes an EnvContext dict)."""
        module, name = self.module, self.name

        def create(env_config: dict) -> gym.Env:
            entry = ENVS[name]
            assert entry.module == module
            return entry.make(dict(env_config))

        return create


ENVS: dict[str, EnvEntry] = {
    entry.name: entry
    for entry in [
        EnvEntry(
            name="apple_retrieval",
            description="AppleRetrieval toy (paper App. A.2): walk to the apple at M, then home.",
            module="ftcl.envs.toys",
            suites={"far": {"start_phase": 2}, "full": {"start_phase": 1}},
        ),
        EnvEntry(
            name="robotic_sequence",
            description="RoboticSequence (paper §2.3, Alg. 1): Meta-World stages in one episode.",
            module="ftcl.envs.robotic_sequence",
            suites={},  # per-stage suites are generated from the stage list, see robotic_sequence.py
        ),
        EnvEntry(
            name="montezuma",
            description="Montezuma's Revenge (ALE; paper §2.2): rooms from RAM, episodes from stored start states.",
            module="ftcl.envs.montezuma",
            suites={},  # `full`, and one per stored start state, see montezuma.py
        ),
        EnvEntry(
            name="nethack",
            description="NetHack (NLE 1.3; paper §2.1): Human Monk, score reward, FAR starts on dlvl 4 and in Sokoban.",
            module="ftcl.envs.nethack",
            suites={},  # `full`, `dlvl4`, `sokoban`, see nethack.py
        ),
        EnvEntry(
            name="cartpole",
            description="Gymnasium CartPole-v1 (smoke tests and throughput baselines).",
            module="ftcl.envs.classic",
            suites={},
        ),
    ]
}


def get_env_entry(name: str) -> EnvEntry:
    try:
        return ENVS[name]
    except KeyError:
        raise KeyError(f"unknown env {name!r}; allowed: {', '.join(sorted(ENVS))}") from None
