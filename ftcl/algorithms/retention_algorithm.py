"""The config and Algorithm side of retention, shared by RetentionPPO, RetentionAPPO, RetentionSAC.

`config.retention(method=..., pretrained_module_path=..., retention_data_path=...)` stores the
settings in `learner_config_dict["ftcl_retention"]` (plain JSON-able values, so they survive
Tune's param_space) and checks them at once; `validate()` checks them again before a trial.

`Algorithm.setup()` then, in this order: builds everything as RLlib does (Learner.build() runs
here, with random weights); loads the pre-trained RLModule into the learner group (not for
`scratch`) and syncs the weights to the EnvRunners; only then asks every learner to capture θ*,
the frozen teacher, the Fisher and the BC buffer (`prepare_retention`); SAC also fills the
protected partition of its replay buffer (EM).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID

from ftcl.algorithms.retention_learner import RETENTION_CONFIG_KEY
from ftcl.pretrain.data import TRANSITION_KEYS, check_retention_data, load_retention_data
from ftcl.retention.config import NEEDS_STATES, NEEDS_TRANSITIONS, OFF_POLICY_ONLY, needs_pretrained
from ftcl.retention.factory import parse_method

logger = logging.getLogger(__name__)

PRETRAINED_MODULE_COMPONENT = f"{COMPONENT_LEARNER_GROUP}/{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}/{DEFAULT_MODULE_ID}"
"""Where `pretrained_module_path` is loaded: the default policy's RLModule in the learner group."""


def required_data(method: dict[str, Any]) -> tuple[list[str], int]:
    """(keys, minimum rows) the method needs from the retention data file; ([], 0) if none."""
    name = method["name"]
    if name == "bc":
        keys = ["obs", "action_dist_inputs"] if method.get("teacher_labels") == "dataset" else ["obs"]
        return keys, int(method["buffer_size"])
    if name == "ewc":
        keys = ["obs", "actions"] if method.get("fisher_labels") == "dataset" else ["obs"]
        return keys, int(method["fisher_batches"]) * int(method["fisher_batch_size"])
    if name in NEEDS_TRANSITIONS:
        return list(TRANSITION_KEYS), int(method["memory_size"])
    assert name not in NEEDS_STATES
    return [], 0


def check_retention_settings(settings: dict[str, Any], algorithm: str, off_policy: bool) -> None:
    """Raise ValueError naming what is wrong with the retention settings (paths, data, method)."""
    method = settings["method"]
    name = method["name"]
    if name in OFF_POLICY_ONLY and not off_policy:
        raise ValueError(f"retention method '{name}' needs an off-policy replay buffer (SAC); not {algorithm}")
    pretrained = settings.get("pretrained_module_path")
    if needs_pretrained(method):
        if not pretrained:
            raise ValueError(f"retention method '{name}' needs pretrained_module_path (an RLModule checkpoint dir)")
        if not Path(pretrained).is_dir():
            raise ValueError(
                f"pretrained_module_path {pretrained!r} is not a directory; expected the output of "
                "module.save_to_path(dir) (e.g. <algo_ckpt>/learner_group/learner/rl_module/default_policy)"
            )
    keys, min_rows = required_data(method)
    if keys:
        data_path = settings.get("retention_data_path")
        if not data_path:
            raise ValueError(
                f"retention method '{name}' needs retention_data_path (an .npz with keys {keys} "
                "written by ftcl.pretrain.data.save_retention_data)"
            )
        data = load_retention_data(data_path)
        check_retention_data(data, keys, min_rows=min_rows, source=f"retention data {data_path}")


class RetentionConfigMixin:
    """Adds `.retention(...)` and its validation to an RLlib AlgorithmConfig."""

    supports_episodic_memory = False

    def retention(
        self,
        *,
        method: dict[str, Any],
        pretrained_module_path: str | Path | None = None,
        retention_data_path: str | Path | None = None,
    ):
        """Set the retention method (a method config dict), the π* checkpoint and its data."""
        spec = parse_method(method)
        settings = {
            "method": spec.model_dump(mode="json"),
            "pretrained_module_path": str(pretrained_module_path) if pretrained_module_path else None,
            "retention_data_path": str(retention_data_path) if retention_data_path else None,
        }
        check_retention_settings(settings, type(self).__name__, self.supports_episodic_memory)
        self.learner_config_dict = {**(self.learner_config_dict or {}), RETENTION_CONFIG_KEY: settings}  # type: ignore[has-type]
        self._configure_retention_extras(settings)
        return self

    def _configure_retention_extras(self, settings: dict[str, Any]) -> None:
        """Algorithm-specific settings a method implies (SAC: the EM replay buffer)."""

    @property
    def retention_settings(self) -> dict[str, Any] | None:
        """The stored `.retention(...)` settings, or None if never called."""
        return (self.learner_config_dict or {}).get(RETENTION_CONFIG_KEY)  # type: ignore[attr-defined]

    def validate(self) -> None:
        super().validate()  # type: ignore[misc]
        settings = self.retention_settings
        if settings:
            check_retention_settings(settings, type(self).__name__, self.supports_episodic_memory)


class RetentionAlgorithmMixin:
    """Loads π* after the learners are built, then prepares the retention terms (module doc)."""

    def setup(self, config: Any) -> None:
        super().setup(config)  # type: ignore[misc]
        self.retention_summaries: list[dict[str, float]] = []
        settings = (self.config.learner_config_dict or {}).get(RETENTION_CONFIG_KEY)  # type: ignore[attr-defined]
        if settings:
            self._setup_retention(settings)

    def _setup_retention(self, settings: dict[str, Any]) -> None:
        name = settings["method"]["name"]
        pretrained = settings.get("pretrained_module_path")
        if not needs_pretrained(settings["method"]):
            if pretrained:
                logger.info("method %r starts from random weights; %s is not loaded", name, pretrained)
        else:
            # Learner.build() already ran (random weights); load θ* now and sync the EnvRunners.
            self.restore_from_path(pretrained, component=PRETRAINED_MODULE_COMPONENT)  # type: ignore[attr-defined]
        data = None
        if settings.get("retention_data_path") and required_data(settings["method"])[0]:
            data = load_retention_data(settings["retention_data_path"])
        results = self.learner_group.foreach_learner(  # type: ignore[attr-defined]
            lambda learner, _data=data: learner.prepare_retention(_data)
        )
        self.retention_summaries = []
        for result in results:
            if not result.ok:
                raise RuntimeError(f"a learner failed to prepare retention: {result.get()}")
            self.retention_summaries.append(result.get())
        self._setup_retention_extras(settings, data)

    def _setup_retention_extras(self, settings: dict[str, Any], data: dict[str, Any] | None) -> None:
        """Algorithm-specific preparation after θ* is loaded (SAC: fill the EM partition)."""
