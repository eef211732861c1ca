"""Which parameters may change at a given environment step: skip-train, critic warm-up, freezing.

Phases, in env steps counted from the start of fine-tuning:
  [0, skip_train)                      no parameter changes at all (π* is measured in place);
  [skip_train, skip_train + warmup)    only critic parameters train (critic warm-up);
  afterwards                           everything trains, except submodules inside a freeze window.
Freeze windows name RLModule attribute paths ("encoder.actor_encoder", "pi"); a window covers
[from_env_step, until_env_step) in absolute env steps (until None = to the end).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Literal, Sequence

if TYPE_CHECKING:
    from ftcl.retention.method import RetentionMethod

TrainingPhase = Literal["skip", "critic_warmup", "train"]


def parameter_in_module(parameter_name: str, module_path: str) -> bool:
    """True if `parameter_name` belongs to the submodule at `module_path` (dot-boundary prefix)."""
    return parameter_name == module_path or parameter_name.startswith(module_path + ".")


@dataclass(frozen=True)
class FreezeWindowRule:
    """Freeze these submodules for env steps in [from_env_step, until_env_step)."""

    module_paths: tuple[str, ...]
    from_env_step: int = 0
    until_env_step: int | None = None

    def active(self, env_step: int) -> bool:
        return env_step >= self.from_env_step and (
            self.until_env_step is None or env_step < self.until_env_step
        )


class TrainingGate:
    """Decides the training phase and the frozen parameter names at an env step."""

    def __init__(
        self,
        freeze_windows: Sequence[FreezeWindowRule] = (),
        critic_warmup_env_steps: int = 0,
        skip_train_env_steps: int = 0,
    ) -> None:
        self.freeze_windows = tuple(freeze_windows)
        self.critic_warmup_env_steps = critic_warmup_env_steps
        self.skip_train_env_steps = skip_train_env_steps

    @classmethod
    def from_method(cls, method: "RetentionMethod") -> "TrainingGate":
        """The gate a method config asks for (its freeze windows, critic warm-up and skip-train)."""
        windows = [
            FreezeWindowRule(tuple(window.modules), window.from_env_step, window.until_env_step)
            for window in method.freeze
        ]
        return cls(
            windows,
            critic_warmup_env_steps=method.critic_warmup_env_steps,
            skip_train_env_steps=method.skip_train_env_steps,
        )

    @property
    def is_trivial(self) -> bool:
        """True if nothing is ever frozen."""
        return not (self.freeze_windows or self.critic_warmup_env_steps or self.skip_train_env_steps)

    def phase(self, env_step: int) -> TrainingPhase:
        if env_step < self.skip_train_env_steps:
            return "skip"
        if env_step < self.skip_train_env_steps + self.critic_warmup_env_steps:
            return "critic_warmup"
        return "train"

    def check_module_paths(self, parameter_names: Iterable[str]) -> None:
        """Raise ValueError naming any freeze path that matches no parameter."""
        names = list(parameter_names)
        for window in self.freeze_windows:
            for path in window.module_paths:
                if not any(parameter_in_module(name, path) for name in names):
                    top_level = sorted({name.split(".")[0] for name in names})
                    raise ValueError(
                        f"freeze: module path {path!r} matches no parameter of the RLModule; "
                        f"top-level submodules are {top_level}"
                    )

    def frozen_names(
        self, env_step: int, parameter_names: Iterable[str], critic_names: Iterable[str]
    ) -> set[str]:
        """Names (from `parameter_names`) that must not change at `env_step`."""
        names = list(parameter_names)
        phase = self.phase(env_step)
        if phase == "skip":
            return set(names)
        if phase == "critic_warmup":
            critic = set(critic_names)
            return {name for name in names if name not in critic}
        active_paths = [path for window in self.freeze_windows if window.active(env_step) for path in window.module_paths]
        return {name for name in names if any(parameter_in_module(name, path) for path in active_paths)}
