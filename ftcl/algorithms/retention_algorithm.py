"""The config and Algorithm side of retention, shared by RetentionPPO, RetentionAPPO, RetentionSAC.

`config.retention(method=..., pretrained_module_path=..., retention_data_path=..., initial_alpha=...)`
parses the method once into its typed `RetentionMethod`, checks the settings against what the
method declares (off-policy only, π* — the whole agent, critics included, see `pi_star` — data
keys and rows, from the data file's headers, not its arrays) and stores a `RetentionSettings` in
`learner_config_dict["ftcl_retention"]`.

`Algorithm.setup()` then, in this order: builds everything as RLlib does (Learner.build() runs
here, with random weights); loads π* strictly into every learner — actor, critics (targets
follow them) and, for SAC, α (`initial_alpha`) — unless the method starts from scratch, and
syncs the weights to the EnvRunners; reads the data file — once —
and asks every learner to capture θ*, the frozen teacher, the Fisher and the BC buffer
(`prepare_retention`); finally the algorithm fills what the method adds to it (SAC: the
protected replay partition of EM).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftcl.algorithms.pi_star import InitialAlpha, read_pi_star
from ftcl.data.retention_data import check_retention_shapes, load_retention_data, retention_data_shapes
from ftcl.retention.method import RetentionMethod
from ftcl.retention.registry import parse_method
from ftcl.data.integrity import verify_artifact_files

logger = logging.getLogger(__name__)

RETENTION_CONFIG_KEY = "ftcl_retention"
"""Key in `learner_config_dict` under which `.retention(...)` stores its `RetentionSettings`."""

@dataclass(frozen=True)
class RetentionSettings:
    """The retention method of a trial, the π* checkpoint it starts from and π*'s data file."""

    method: RetentionMethod
    pretrained_module_path: str | None = None
    retention_data_path: str | None = None
    initial_alpha: InitialAlpha = "from_pretrained"
    """SAC's temperature α at fine-tuning start: π*'s (`from_pretrained`) or a number; methods that
    start from scratch use the algorithm's own `initial_alpha`."""


def retention_settings_of(config: Any) -> RetentionSettings | None:
    """The `RetentionSettings` stored in an AlgorithmConfig, or None if `.retention()` was never called."""
    return (config.learner_config_dict or {}).get(RETENTION_CONFIG_KEY)


def check_pretrained_module(path: str | None, method_name: str, *, needs_alpha: bool = False) -> None:
    """Raise ValueError unless `path` is a whole π* (actor and critics; α if `needs_alpha`)."""
    if not path:
        raise ValueError(f"retention method '{method_name}' needs pretrained_module_path (a π* folder's module/)")
    read_pi_star(path, needs_critics=True, needs_alpha=needs_alpha)


def check_initial_alpha(initial_alpha: Any, off_policy: bool) -> None:
    """Raise ValueError unless `initial_alpha` is `from_pretrained` or a positive number (SAC only)."""
    if initial_alpha == "from_pretrained":
        return
    if isinstance(initial_alpha, bool) or not isinstance(initial_alpha, (int, float)) or not initial_alpha > 0:
        raise ValueError(f"initial_alpha must be 'from_pretrained' or a positive number; got {initial_alpha!r}")
    if not off_policy:
        raise ValueError(f"initial_alpha={initial_alpha!r}: only SAC has a temperature α")


def check_retention_settings(settings: RetentionSettings, algorithm: str, off_policy: bool) -> None:
    """Raise ValueError naming what is wrong with the settings (method, π* folder, data file)."""
    method = settings.method
    name = method.name  # type: ignore[attr-defined]
    if method.off_policy_only and not off_policy:
        raise ValueError(f"retention method '{name}' needs an off-policy replay buffer (SAC); not {algorithm}")
    check_initial_alpha(settings.initial_alpha, off_policy)
    if method.starts_from_pretrained:
        check_pretrained_module(settings.pretrained_module_path, name,
                                needs_alpha=off_policy and settings.initial_alpha == "from_pretrained")
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
        initial_alpha: InitialAlpha = "from_pretrained",
    ):
        """Set the retention method (typed, or a config dict), π*, its data and SAC's α at start."""
        settings = RetentionSettings(
            method=parse_method(method),
            pretrained_module_path=str(pretrained_module_path) if pretrained_module_path else None,
            retention_data_path=str(retention_data_path) if retention_data_path else None,
            initial_alpha=initial_alpha,
        )
        check_retention_settings(settings, type(self).__name__, self.supports_replay)
        self.learner_config_dict = {**(self.learner_config_dict or {}), RETENTION_CONFIG_KEY: settings}  # type: ignore[has-type]
        self._carry_teacher_if_needed(settings.method)
        return self

    def _carry_teacher_if_needed(self, method: RetentionMethod) -> None:
        """A module class that can carry a frozen teacher along its rollouts (a recurrent one, which
        names the model_config key in `carries_teacher_option`) builds it when the method needs a teacher."""
        spec = getattr(self, "_rl_module_spec", None)
        option = getattr(getattr(spec, "module_class", None), "carries_teacher_option", None)
        if option and method.needs_teacher:
            spec.model_config = {**(spec.model_config or {}), option: True}  # type: ignore[union-attr]

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
        # π* and its data as `ftcl pretrain` wrote them (sha256 against provenance.json), before any use
        verify_artifact_files(settings.pretrained_module_path if method.starts_from_pretrained else None,
                              settings.retention_data_path if method.data_needs().keys else None)
        if method.starts_from_pretrained:
            # Learner.build() already ran (random weights); load θ* now and sync the EnvRunners.
            self._load_pi_star(settings)
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

    def _load_pi_star(self, settings: RetentionSettings) -> None:
        """Load the whole π* into every learner (strictly), then the actor into the EnvRunners."""
        pi_star = read_pi_star(settings.pretrained_module_path)
        results = self.learner_group.foreach_learner(  # type: ignore[attr-defined]
            lambda learner, _p=pi_star, _a=settings.initial_alpha: learner.load_pi_star(_p, _a)
        )
        for result in results:
            if not result.ok:
                raise ValueError(f"loading π* failed: {result.get()}")
        self.env_runner_group.sync_weights(  # type: ignore[attr-defined]
            from_worker_or_learner_group=self.learner_group, inference_only=True  # type: ignore[attr-defined]
        )

    def _setup_retention_extras(self, method: RetentionMethod, data: dict[str, Any] | None) -> None:
        """What a method adds to the algorithm itself after θ* is loaded (SAC: the EM partition)."""
