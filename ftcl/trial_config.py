"""One trial's RLlib AlgorithmConfig, built from its spec: env, runners, model, options, retention.

Shared by the runner (which asks Tune for each trial's resources) and the trainable (which builds
the Algorithm inside the trial).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ftcl.plan import TrialPlan, trial_spec
from ftcl.spec import ExperimentSpec, SpecError

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
    from ray.tune import PlacementGroupFactory


def env_id(env_name: str) -> str:
    """The name under which an ftcl env is registered with Ray Tune."""
    return f"ftcl/{env_name}"


def register_envs() -> None:
    """Register every ftcl env with Ray Tune (in this process)."""
    from ray.tune import register_env

    from ftcl.envs.registry import ENVS

    for name, entry in ENVS.items():
        register_env(env_id(name), entry.creator())


def build_algorithm_config(
    spec: ExperimentSpec, plan: TrialPlan, module_path: Path | None, data_path: Path | None
) -> AlgorithmConfig:
    """The RLlib AlgorithmConfig of one trial (a `Retention*Config` from `ftcl.algorithms`)."""
    from ftcl.pretrain.demonstrations import pretraining_method

    config = _algorithm_config(spec, plan)
    if plan.stage == "finetune":
        method = spec.method(plan.method)
        if method.entropy_coeff is not None:  # checked against the algorithm's keywords by the spec loader
            config = config.training(entropy_coeff=method.entropy_coeff)
    else:
        from ftcl.data.retention_data import retention_data_shapes

        rows = retention_data_shapes(data_path)["obs"][0] if data_path is not None and Path(data_path).is_file() else None
        method = pretraining_method(spec, rows)
    return config.retention(
        method=method,
        pretrained_module_path=str(module_path) if module_path else None,
        retention_data_path=str(data_path) if data_path else None,
        initial_alpha=spec.pretrained.initial_alpha,
    )


def trial_resources(spec: ExperimentSpec, plan: TrialPlan) -> PlacementGroupFactory:
    """What one trial asks Tune for: RLlib's own request for this config (the trial process itself,
    env runners, remote learners such as APPO's), as a placement group."""
    config = _algorithm_config(trial_spec(spec, plan), plan)
    return config.algo_class.default_resource_request(config)


def _algorithm_config(spec: ExperimentSpec, plan: TrialPlan) -> AlgorithmConfig:
    """The trial's RLlib config without the retention settings."""
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from ftcl.algorithms import algorithm_config_class
    from ftcl.models import model_class
    from ftcl.tracking.episode_metrics import EpisodeMetrics

    algorithm = spec.algorithm
    config = algorithm_config_class(algorithm.name)()
    config = (
        config.environment(env_id(spec.env.name), env_config=dict(spec.env.options))
        .env_runners(
            num_env_runners=algorithm.num_env_runners,
            num_envs_per_env_runner=algorithm.num_envs_per_env_runner,
            rollout_fragment_length=algorithm.rollout_fragment_length,
        )
        .debugging(seed=plan.seed, log_level="ERROR")
        .callbacks(EpisodeMetrics)
        .resources(num_cpus_for_main_process=spec.resources.cpus_per_trial)
        .learners(num_learners=spec.resources.num_learners, num_gpus_per_learner=spec.resources.gpus_per_learner)
    )
    if spec.resources.gpus_per_env_runner:
        config = config.env_runners(num_gpus_per_env_runner=spec.resources.gpus_per_env_runner)
    if algorithm.actor_optimizer is not None:
        from ftcl.algorithms.ppo import ACTOR_OPTIMIZER_KEY

        config = config.training(learner_config_dict={ACTOR_OPTIMIZER_KEY: algorithm.actor_optimizer.model_dump()})
    try:
        config = config.training(**algorithm.options)
    except TypeError as error:
        raise SpecError(f"algorithm.options: {error}") from None
    if algorithm.model == "default":
        if algorithm.model_config_options:
            config = config.rl_module(model_config=dict(algorithm.model_config_options))
    else:
        config = config.rl_module(
            rl_module_spec=RLModuleSpec(
                module_class=model_class(algorithm.model), model_config=dict(algorithm.model_config_options)
            )
        )
    return config
