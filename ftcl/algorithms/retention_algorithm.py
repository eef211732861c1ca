"""The config and Algorithm side of retention, shared by RetentionPPO, RetentionAPPO, RetentionSAC.

`config.retention(method=..., pretrained_module_path=..., retention_data_path=...)` parses the
method once into its typed `RetentionMethod`, checks the settings against what the method
declares (off-policy only, π*'s weights, data keys and rows — the data file's headers, not its
arrays) and stores a `RetentionSettings` in `learner_config_dict["ftcl_retention"]`.

`Algorithm.setup()` then, in this order: builds everything as RLlib does (Learner.build() runs
here, with random weights); loads the pre-trained RLModule into the learner group (unless the
method starts from scratch) and syncs the weights to the EnvRunners; reads the data file — once —
and asks every learner to capture θ*, the frozen teacher, the Fisher and the BC buffer
(`prepare_retention`); finally the algorithm fills what the method adds to it (SAC: the
protected replay partition of EM).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID

from ftcl.data.retention_data import check_retention_shapes, load_retention_data, retention_data_shapes
from ftcl.retention.method import RetentionMethod
from ftcl.retention.registry import parse_method

logger = logging.getLogger(__name__)

RETENTION_CONFIG_KEY = "ftcl_retention"
"""Key in `learner_config_dict` under which `.retention(...)` stores its `RetentionSettings`."""

PRETRAINED_MODULE_COMPONENT = f"{COMPONENT_LEARNER_GROUP}/{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}/{DEFAULT_MODULE_ID}"
"""Where `pretrained_module_path` is loaded: the default policy's RLModule in the learner group."""

MODULE_CHECKPOINT_FILES = ("class_and_ctor_args.pkl", "module_state.pkl")
"""What `RLModule.save_to_path(dir)` writes (and what a π* folder's `module/` must hold)."""


@dataclass(frozen=True)
class RetentionSettings:
    """The retention method of a trial, the π* checkpoint it starts from and π*'s data file."""

    method: RetentionMethod
    pretrained_module_path: str | None = None
    retention_data_path: str | None = None


def retention_settings_of(config: Any) -> RetentionSettings | None:
    """The `RetentionSettings` stored in an AlgorithmConfig, or None if `.retention()` was never called."""
    return (config.learner_config_dict or {}).get(RETENTION_CONFIG_KEY)


def check_pretrained_module(path: str | None, method_name: str) -> None:
    """Raise ValueError unless `path` is an RLModule checkpoint folder."""
    if not path:
        raise ValueError(f"retention method '{method_name}' needs pretrained_module_path (an RLModule checkpoint dir)")
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(
            f"pretrained_module_path {path!r} is not a directory; expected the output of "
            "module.save_to_path(dir) (e.g. a π* folder's module/ written by ftcl pretrain)"
        )
    missing = [name for name in MODULE_CHECKPOINT_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(
            f"pretrained_module_path {path!r} is not an RLModule checkpoint: it lacks {missing} "
            "(written by module.save_to_path(dir))"
        )


def check_retention_settings(settings: RetentionSettings, algorithm: str, off_policy: bool) -> None:
    """Raise ValueError naming what is wrong with the settings (method, π* folder, data file)."""
    method = settings.method
    name = method.name  # type: ignore[attr-defined]
    if method.off_policy_only and not off_policy:
        raise ValueError(f"retention method '{name}' needs an off-policy replay buffer (SAC); not {algorithm}")
    if method.starts_from_pretrained:
        check_pretrained_module(settings.pretrained_module_path, name)
    needs = method.data_needs()
    if needs.keys:
        if not settings.retention_data_path:
            raise ValueError(
                f"retention method '{name}' needs retention_data_path (an .npz with keys {list(needs.keys)} "
                "written by ftcl.data.retention_data.save_retention_data)"
            )
        shapes = retention_data_shapes(settings.retention_data_path)
        check_retention_shapes(shapes, needs.keys, min_rows=needs.min_rows,
                               source=f"retention data {settings.retention_data_path}")


class RetentionConfigMixin:
    """Adds `.retention(...)` and its validation to an RLlib AlgorithmConfig."""

    supports_replay = False
    """True for off-policy algorithms (methods that change the replay buffer need one)."""

    def retention(
        self,
        *,
        method: RetentionMethod | dict[str, Any],
        pretrained_module_path: str | Path | None = None,
        retention_data_path: str | Path | None = None,
    ):
        """Set the retention method (typed, or a config dict), the π* checkpoint and its data."""
        settings = RetentionSettings(
            method=parse_method(method),
            pretrained_module_path=str(pretrained_module_path) if pretrained_module_path else None,
            retention_data_path=str(retention_data_path) if retention_data_path else None,
        )
        check_retention_settings(settings, type(self).__name__, self.supports_replay)
        self.learner_config_dict = {**(self.learner_config_dict or {}), RETENTION_CONFIG_KEY: settings}  # type: ignore[has-type]
        return self

    @property
    def retention_settings(self) -> RetentionSettings | None:
        """The stored `.retention(...)` settings, or None if never called."""
        return retention_settings_of(self)

    def validate(self) -> None:
        super().validate()  # type: ignore[misc]
        settings = self.retention_settings
        if settings is not None:
            check_retention_settings(settings, type(self).__name__, self.supports_replay)


class RetentionAlgorithmMixin:
    """Loads π* after the learners are built, then prepares the retention terms (module doc)."""

    def setup(self, config: Any) -> None:
        super().setup(config)  # type: ignore[misc]
        self.retention_summaries: list[dict[str, float]] = []
        settings = retention_settings_of(self.config)  # type: ignore[attr-defined]
        if settings is not None:
            self._setup_retention(settings)

    def _setup_retention(self, settings: RetentionSettings) -> None:
        method = settings.method
        if method.starts_from_pretrained:
            # Learner.build() already ran (random weights); load θ* now and sync the EnvRunners.
            self.restore_from_path(settings.pretrained_module_path, component=PRETRAINED_MODULE_COMPONENT)  # type: ignore[attr-defined]
        elif settings.pretrained_module_path:
            logger.info("method %r starts from random weights; %s is not loaded", method.display_name,
                        settings.pretrained_module_path)
        data = None
        if method.data_needs().keys:
            data = load_retention_data(settings.retention_data_path)  # the one read of the file per trial
        results = self.learner_group.foreach_learner(  # type: ignore[attr-defined]
            lambda learner, _data=data: learner.prepare_retention(_data)
        )
        self.retention_summaries = []
        for result in results:
            if not result.ok:
                raise RuntimeError(f"a learner failed to prepare retention: {result.get()}")
            self.retention_summaries.append(result.get())
        self._setup_retention_extras(method, data)

    def _setup_retention_extras(self, method: RetentionMethod, data: dict[str, Any] | None) -> None:
        """What a method adds to the algorithm itself after θ* is loaded (SAC: the EM partition)."""
