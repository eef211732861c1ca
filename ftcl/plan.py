"""Trial planning as plain data, and where an experiment's files live.

A stage of an experiment (`pretrain` or `finetune`) is a list of `TrialPlan`s: one π* per grid
variant for pre-training; methods × seeds × variants, seed-major, for fine-tuning. `trial_spec`
gives the spec a single trial runs. The path helpers name the files inside an experiment folder:
- `pretrained/v<k>/{module,data.npz,provenance.json}` — the π* of grid variant k;
- `demonstrations/v<k>.npz` — the scripted-expert demonstrations of its pre-training trial.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftcl.spec import ExperimentSpec


@dataclass(frozen=True)
class TrialPlan:
    """Everything one trial needs, as plain data (it travels to the trial's worker)."""

    key: str  # unique within a stage, also the MLflow run name
    stage: str
    method: str  # method label ("scratch" for pre-training)
    seed: int
    variant_index: int
    variant: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def plan_trials(spec: ExperimentSpec, stage: str) -> list[TrialPlan]:
    """The trials of one stage (`pretrain` or `finetune`) of the spec, in the order Tune starts them."""
    variants = spec.variants()
    plans = []
    for index, variant in enumerate(variants):
        suffix = f"__v{index}" if len(variants) > 1 else ""
        if stage == "pretrain":
            seed = spec.pretrained.train.seed  # one π* per variant, shared by all seeds
            plans.append(TrialPlan(f"pretrain{suffix}", stage, "scratch", seed, index, variant))
            continue
        # Seed-major: every method's first seed comes before any second seed, so a grid that is
        # stopped early (or runs on few CPUs) already compares all methods.
        for seed in spec.seeds:
            for method in spec.methods:
                key = f"{method.display_name}__seed{seed}{suffix}"
                plans.append(TrialPlan(key, stage, method.display_name, seed, index, variant))
    return plans


def trial_spec(spec: ExperimentSpec, plan: TrialPlan) -> ExperimentSpec:
    """The spec one trial runs: grid variant applied; for pre-training, the pre-training overrides."""
    resolved = spec.with_overrides(plan.variant) if plan.variant else spec
    if plan.stage == "pretrain":
        train = resolved.pretrained.train
        resolved = resolved.model_copy(deep=True)
        resolved.env.options = {**resolved.env.options, **train.env_options}
        resolved.algorithm.options = {**resolved.algorithm.options, **train.algorithm_options}
        resolved.budget.env_steps = train.env_steps
    return resolved


# ----- files of an experiment ---------------------------------------------------------------------
def pretrained_dir(experiment_dir: Path, variant_index: int) -> Path:
    """The folder of the π* that the experiment pre-trains for a grid variant."""
    return experiment_dir / "pretrained" / f"v{variant_index}"


def demonstrations_path(experiment_dir: Path, variant_index: int) -> Path:
    """The demonstrations file of a grid variant's pre-training trial."""
    return experiment_dir / "demonstrations" / f"v{variant_index}.npz"


def pretrained_paths(spec: ExperimentSpec, experiment_dir: Path, plan: TrialPlan) -> tuple[Path | None, Path | None]:
    """(module, data) that a trial starts from: π* and its data for fine-tuning; the demonstrations
    (no module) for pre-training with demonstrations; (None, None) otherwise."""
    if plan.stage == "pretrain":
        if spec.pretrained.train.demonstrations is not None:
            return None, demonstrations_path(experiment_dir, plan.variant_index)
        return None, None
    method = spec.method(plan.method) if plan.stage == "finetune" else None
    if method is None or method.name == "scratch":
        return None, None
    return pi_star_paths(spec, experiment_dir, plan.variant_index)


def pi_star_paths(spec: ExperimentSpec, experiment_dir: Path, variant_index: int) -> tuple[Path | None, Path | None]:
    """(module, data) of the spec's π* for a grid variant: pre-trained in the experiment or given."""
    if spec.pretrained.train is not None:
        root = pretrained_dir(experiment_dir, variant_index)
        return root / "module", root / "data.npz"
    return spec.pretrained.module, spec.pretrained.data
