"""Spec -> RLlib AlgorithmConfig -> Ray Tune grid over methods × seeds (× extra grid variants).

An experiment is one `ftcl run` invocation ("group"), stored in `<ftcl home>/ray_results/<group>/`:
- `spec.resolved.yaml` — the validated spec that produced it (what `--resume` reloads);
- `pretrain/` — a Tune experiment that trains π* per grid variant (only when the spec says
  `pretrained.train`); each π* is exported to `pretrained/<variant>/{module,data.npz,provenance.json}`;
- `finetune/` — the Tune experiment of the fine-tuning grid.
Every trial is an `FtclTrainable` that owns one RLlib Algorithm (built from the spec), reports flat
metrics with `env_steps` as the x-axis, runs the spec's evaluation suites, and checkpoints through
the Algorithm's own checkpointing so Tune can resume it.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from ftcl.spec import ANALYTIC_ALGORITHMS, ExperimentSpec, SpecError, variant_label
from ftcl.tracking import store



class ExperimentInterrupted(RuntimeError):
    """Trials stopped before their budget (Ctrl-C, a lost node); `--resume` continues them."""


# ----- trials -------------------------------------------------------------------------------------
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


def pretrained_dir(experiment_dir: Path, variant_index: int) -> Path:
    return experiment_dir / "pretrained" / f"v{variant_index}"


def demonstrations_path(experiment_dir: Path, variant_index: int) -> Path:
    return experiment_dir / "demonstrations" / f"v{variant_index}.npz"


def pretraining_method(spec: ExperimentSpec) -> dict[str, Any]:
    """The retention method of the pre-training stage: none (`scratch`), or BC toward demonstrations."""
    demonstrations = spec.pretrained.train.demonstrations
    if demonstrations is None:
        return {"name": "scratch"}
    return {
        "name": "bc",
        "label": "sac_with_demonstrations",
        "coeff": demonstrations.bc_coeff,
        "buffer_size": demonstrations.transitions,
        "batch_size": demonstrations.batch_size,
        "teacher_labels": "dataset",
    }


def ensure_demonstrations(trial: ExperimentSpec, experiment_dir: Path, plan: TrialPlan) -> Path:
    """Collect the scripted-expert demonstrations of a pre-training trial once (kept for resumes)."""
    from ftcl.envs.registry import ENVS
    from ftcl.pretrain.data import save_retention_data
    from ftcl.pretrain.demonstrations import collect_demonstrations

    path = demonstrations_path(experiment_dir, plan.variant_index)
    if path.is_file():
        return path
    settings = trial.pretrained.train.demonstrations
    entry = ENVS[trial.env.name]
    env = entry.make(trial.env.options)
    try:
        data = collect_demonstrations(
            entry.scripted_expert(trial.env.options), env, settings.transitions, seed=plan.seed,
            action_noise=settings.action_noise, label_log_std=settings.label_log_std,
        )
    finally:
        env.close()
    return save_retention_data(path, data)


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


# ----- RLlib config --------------------------------------------------------------------------------
def env_id(env_name: str) -> str:
    return f"ftcl/{env_name}"


def register_envs() -> None:
    from ray.tune import register_env

    from ftcl.envs.registry import ENVS

    for name, entry in ENVS.items():
        register_env(env_id(name), entry.creator())


def model_module_class(name: str):
    if name == "linear_policy":
        from ftcl.models.linear_policy import LinearPolicyModule

        return LinearPolicyModule
    if name == "multihead_sac":
        from ftcl.models.multihead_sac import MultiHeadSACModule

        return MultiHeadSACModule
    if name == "mlp_sac":
        from ftcl.models.mlp_sac import MLPSACTorchRLModule

        return MLPSACTorchRLModule
    raise SpecError(f"algorithm.model: unknown model {name!r}; allowed: default, linear_policy, multihead_sac, mlp_sac")


def build_algorithm_config(
    spec: ExperimentSpec, plan: TrialPlan, module_path: Path | None, data_path: Path | None
):
    """The RLlib AlgorithmConfig of one trial (a `Retention*Config` from `ftcl.algorithms`)."""
    config = _algorithm_config(spec, plan)
    if plan.stage == "finetune":
        method_dump = spec.method(plan.method).model_dump()
    else:
        method_dump = pretraining_method(spec)
    return config.retention(
        method=method_dump,
        pretrained_module_path=str(module_path) if module_path else None,
        retention_data_path=str(data_path) if data_path else None,
    )


def trial_resources(spec: ExperimentSpec, plan: TrialPlan):
    """What one trial asks Tune for: RLlib's own request for this config (the trial process itself,
    env runners, remote learners such as APPO's), as a placement group."""
    config = _algorithm_config(trial_spec(spec, plan), plan)
    return config.algo_class.default_resource_request(config)


def _algorithm_config(spec: ExperimentSpec, plan: TrialPlan):
    """The trial's RLlib config without the retention settings."""
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from ftcl.algorithms import ALGORITHM_CONFIGS

    algorithm = spec.algorithm
    config = ALGORITHM_CONFIGS[algorithm.name]()
    config = (
        config.environment(env_id(spec.env.name), env_config=dict(spec.env.options))
        .env_runners(
            num_env_runners=algorithm.num_env_runners,
            num_envs_per_env_runner=algorithm.num_envs_per_env_runner,
            rollout_fragment_length=algorithm.rollout_fragment_length,
        )
        .debugging(seed=plan.seed, log_level="ERROR")
        .resources(num_cpus_for_main_process=spec.resources.cpus_per_trial)
    )
    if algorithm.actor_optimizer is not None:
        from ftcl.algorithms.ppo import ACTOR_OPTIMIZER_KEY

        config = config.training(learner_config_dict={ACTOR_OPTIMIZER_KEY: algorithm.actor_optimizer.model_dump()})
    try:
        config = config.training(**algorithm.options)
    except TypeError as error:
        raise SpecError(f"algorithm.options: {error}") from None
    if algorithm.flat_replay:
        config = config.throughput(flat_replay=True)
    if algorithm.model == "default":
        if algorithm.model_config_options:
            config = config.rl_module(model_config=dict(algorithm.model_config_options))
    else:
        config = config.rl_module(
            rl_module_spec=RLModuleSpec(
                module_class=model_module_class(algorithm.model), model_config=dict(algorithm.model_config_options)
            )
        )
    return config


# ----- the trainable -------------------------------------------------------------------------------
def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat


def _trainable_class():
    from ray import tune

    class FtclTrainable(tune.Trainable):
        """One trial: an RLlib Algorithm trained to the env-step budget, with evaluation suites."""

        def setup(self, config: dict, spec_json: str, plans: dict, experiment_dir: str, command: str):
            import torch

            torch.set_num_threads(1)
            register_envs()
            self.spec = ExperimentSpec.model_validate_json(spec_json)
            self.plan = TrialPlan(**plans[config["ftcl_trial"]])
            self.trial = trial_spec(self.spec, self.plan)
            self.experiment_dir = Path(experiment_dir)
            self.command = command
            module_path, data_path = pretrained_paths(self.spec, self.experiment_dir, self.plan)
            if self.plan.stage == "pretrain" and self.trial.pretrained.train.demonstrations is not None:
                ensure_demonstrations(self.trial, self.experiment_dir, self.plan)
            self.algo = build_algorithm_config(self.trial, self.plan, module_path, data_path).build_algo()
            self.env_steps = 0
            self.next_evaluation = 0
            self.last_time = time.time()
            self.expert_rows: dict[str, tuple[Any, Any]] | None = None  # π*'s rows per suite (Fig. 8), loaded once

        # ---- evaluation ----
        def _evaluate(self) -> dict[str, float]:
            """Evaluation suites (success, return, length) and, for fine-tuning trials, the
            log-likelihood of π*'s stored actions on each of `log_likelihood_suites` (paper Fig. 8)."""
            from ftcl.envs.registry import ENVS
            from ftcl.evaluation.likelihood import stored_action_log_likelihood
            from ftcl.evaluation.suites import evaluate_policy

            evaluation = self.trial.evaluation
            if not evaluation.active:
                return {}
            entry = ENVS[self.trial.env.name]
            options = entry.validate_options(self.trial.env.options)
            suites = entry.suites_for(options)
            module = self.algo.get_module()
            metrics = {}
            for suite in evaluation.suites:
                suite_options = {**options, **suites[suite]}
                values = evaluate_policy(
                    module, lambda: entry.make(suite_options), evaluation.episodes,
                    seed=10_000 + self.plan.seed, explore=evaluation.explore,
                )
                metrics.update({f"evaluation/{suite}/{k}": v for k, v in values.items()})
            if self.plan.stage == "finetune":
                for suite, (observations, actions) in self._expert_rows(options).items():
                    # ℓ(θ) = mean log π_θ(a*|s*) over π*'s stored rows of the suite
                    metrics[f"analysis/log_likelihood/{suite}"] = stored_action_log_likelihood(
                        module, observations, actions
                    )
            return metrics

        def _expert_rows(self, options: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
            """Suite -> (s*, a*): π*'s stored rows of each of `log_likelihood_suites`, loaded once.

            Every fine-tuning trial reads the spec's π* data (`pi_star_paths`), scratch included: a
            scratch trial starts from no π*, and its curve is the baseline.
            """
            if self.expert_rows is None:
                from ftcl.evaluation.likelihood import suite_rows
                from ftcl.pretrain.data import load_retention_data

                names = self.trial.evaluation.log_likelihood_suites
                if not names:
                    self.expert_rows = {}
                    return self.expert_rows
                _, data_path = pi_star_paths(self.spec, self.experiment_dir, self.plan.variant_index)
                data = load_retention_data(data_path)
                self.expert_rows = suite_rows(data, self.trial.env.name, options, names)
                empty = [suite for suite, (observations, _) in self.expert_rows.items() if len(observations) == 0]
                if empty:
                    print(f"[ftcl] {self.plan.key}: π*'s data {data_path} has no states of suite(s) {empty}; "
                          "their log-likelihood is not logged", file=sys.stderr)
            return self.expert_rows

        def step(self) -> dict:
            budget = self.trial.budget.env_steps
            metrics: dict[str, Any] = {}
            if self.env_steps == 0 and self.next_evaluation == 0 and self.trial.evaluation.active:
                # A point at env step 0: π* (or the random init) before any update.
                metrics = self._evaluate()
                self.next_evaluation = self.trial.evaluation.every_env_steps
                return {**metrics, "env_steps": 0, "ftcl_trial": self.plan.key, "done": False}
            result = _flatten(self.algo.train())
            steps = int(result.get("num_env_steps_sampled_lifetime", 0))
            now = time.time()
            metrics.update(
                {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            )
            metrics["throughput/env_steps_per_s"] = (steps - self.env_steps) / max(now - self.last_time, 1e-9)
            self.env_steps, self.last_time = steps, now
            done = steps >= budget
            if self.trial.evaluation.active and (steps >= self.next_evaluation or done):
                metrics.update(self._evaluate())
                every = self.trial.evaluation.every_env_steps
                self.next_evaluation = (steps // every + 1) * every
            if done and self.plan.stage == "pretrain":
                export_pretrained(self.algo, self.spec, self.trial, self.plan, self.experiment_dir, steps,
                                  self.command)
            return {**metrics, "env_steps": steps, "ftcl_trial": self.plan.key, "done": done}

        def save_checkpoint(self, checkpoint_dir: str) -> None:
            self.algo.save_to_path(checkpoint_dir)
            state = {"env_steps": self.env_steps, "next_evaluation": self.next_evaluation}
            (Path(checkpoint_dir) / "ftcl_trial_state.json").write_text(json.dumps(state))

        def load_checkpoint(self, checkpoint_dir: str) -> None:
            self.algo.restore_from_path(checkpoint_dir)
            state = json.loads((Path(checkpoint_dir) / "ftcl_trial_state.json").read_text())
            self.env_steps, self.next_evaluation = state["env_steps"], state["next_evaluation"]
            self.last_time = time.time()

        def cleanup(self) -> None:
            self.algo.stop()

    return FtclTrainable


def export_pretrained(algo, spec: ExperimentSpec, trial: ExperimentSpec, plan: TrialPlan,
                      experiment_dir: Path, env_steps: int, command: str) -> Path:
    """Write π* (RLModule checkpoint), its retention data and a provenance file for one variant."""
    from ftcl.envs.registry import ENVS
    from ftcl.evaluation.suites import evaluate_policy
    from ftcl.pretrain.data import collect_policy_data, save_retention_data

    out = pretrained_dir(experiment_dir, plan.variant_index)
    out.mkdir(parents=True, exist_ok=True)
    module = algo.get_module()
    module.save_to_path(str(out / "module"))
    entry = ENVS[trial.env.name]
    options = entry.validate_options(trial.env.options)
    env = entry.make(options)
    try:
        data = collect_policy_data(module, env, trial.pretrained.train.data_transitions, seed=plan.seed)
    finally:
        env.close()
    save_retention_data(out / "data.npz", data)
    success = evaluate_policy(module, lambda: entry.make(options), episodes=20, seed=20_000 + plan.seed)
    suites = entry.suites_for(options)
    success_per_suite = {
        suite: evaluate_policy(module, lambda: entry.make({**options, **suites[suite]}), episodes=20,
                               seed=20_000 + plan.seed)
        for suite in trial.evaluation.suites
    }
    demonstrations = trial.pretrained.train.demonstrations
    if demonstrations is not None:
        demonstrations_file = demonstrations_path(experiment_dir, plan.variant_index)
        guidance = {**demonstrations.model_dump(), "method": pretraining_method(trial),
                    "sha256": store.sha256_of(demonstrations_file)}
    else:
        guidance = None
    provenance = {
        "command": command,
        "spec": spec.name,
        "variant": plan.variant,
        "env": trial.env.name,
        "env_options": options,
        "algorithm": trial.algorithm.name,
        "env_steps": env_steps,
        "seed": plan.seed,
        "success_on_pretraining_task": success,
        "success_per_evaluation_suite": success_per_suite,
        "evaluation_episodes": 20,
        "demonstrations": guidance,
        "git_sha": store.git_sha(),
        "versions": store.package_versions(),
        "created": datetime.now().isoformat(timespec="seconds"),
        "sha256": {"module": store.sha256_of(out / "module"), "data.npz": store.sha256_of(out / "data.npz")},
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str))
    return out


# ----- analytic toys (no RLlib) ---------------------------------------------------------------------
def _analytic_trainable(config: dict, spec_json: str, plans: dict, experiment_dir: str, command: str) -> None:
    from ftcl.envs.toys import two_state_mdp_trainable

    spec = ExperimentSpec.model_validate_json(spec_json)
    plan = TrialPlan(**plans[config["ftcl_trial"]])
    trial = trial_spec(spec, plan)
    two_state_mdp_trainable({**trial.algorithm.options, "steps": trial.budget.env_steps})


# ----- experiments ----------------------------------------------------------------------------------
def experiments_root() -> Path:
    return store.ftcl_home() / "ray_results"


def latest_experiment_dir(spec_name: str) -> Path | None:
    candidates = sorted(experiments_root().glob(f"{spec_name}_2*"))
    candidates = [c for c in candidates if (c / "spec.resolved.yaml").is_file()]
    return candidates[-1] if candidates else None


def _stage_complete(experiment_dir: Path, spec: ExperimentSpec) -> bool:
    return all(
        (pretrained_dir(experiment_dir, i) / "provenance.json").is_file() for i in range(len(spec.variants()))
    )


def run_tags(spec: ExperimentSpec, plan: TrialPlan, group: str, module_path: Path | None) -> dict[str, str]:
    tags = {
        "method": plan.method,
        "seed": str(plan.seed),
        "env": spec.env.name,
        "algorithm": spec.algorithm.name,
        "ftcl.spec": spec.name,
        "ftcl.group": group,
        "ftcl.stage": plan.stage,
        "ftcl.variant": variant_label(plan.variant),
        "git_sha": store.git_sha(),
        "pretrained_sha256": "none",
    }
    if module_path is not None:
        provenance = Path(module_path).parent / "provenance.json"
        if provenance.is_file():
            tags["pretrained_sha256"] = json.loads(provenance.read_text())["sha256"]["module"]
        else:
            tags["pretrained_sha256"] = "pending"
    tags.update({f"versions.{k}": v for k, v in store.package_versions().items()})
    return tags


def _run_stage(spec: ExperimentSpec, stage: str, experiment_dir: Path, group: str, resume: bool) -> None:
    from ray import tune

    from ftcl.tracking.callbacks import MLflowTracking, ProgressPrinter

    plans = plan_trials(spec, stage)
    plan_dicts = {p.key: p.as_dict() for p in plans}
    spec_json = spec.model_dump_json(by_alias=True)
    analytic = spec.algorithm.name in ANALYTIC_ALGORITHMS
    base = _analytic_trainable if analytic else _trainable_class()
    command = "ftcl " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    trainable = tune.with_parameters(base, spec_json=spec_json, plans=plan_dicts, experiment_dir=str(experiment_dir),
                                     command=command)
    if analytic:
        trainable = tune.with_resources(trainable, {"cpu": spec.resources.cpus_per_trial})
    else:
        register_envs()
        trainable = tune.with_resources(trainable, trial_resources(spec, plans[0]))

    uri = store.tracking_uri(spec.tracking.uri)
    tags, params = {}, {}
    for plan in plans:
        trial = trial_spec(spec, plan)
        module_path, _ = pretrained_paths(spec, experiment_dir, plan)
        tags[plan.key] = run_tags(trial, plan, group, module_path)
        params[plan.key] = {"method": plan.method, "seed": plan.seed, "budget.env_steps": trial.budget.env_steps,
                            **{k: v for k, v in plan.variant.items()}}
        if plan.stage == "finetune":
            params[plan.key].update({f"method.{k}": v for k, v in spec.method(plan.method).model_dump().items()
                                     if k not in ("name", "label")})
    steps_per_trial = trial_spec(spec, plans[0]).budget.env_steps
    callbacks = [
        MLflowTracking(uri, spec.experiment_name, tags, params,
                       artifacts=[str(experiment_dir / "spec.resolved.yaml")],
                       extra_patterns=tuple(spec.tracking.extra_metrics)),
        ProgressPrinter(stage, len(plans), steps_per_trial, unit="gradient steps" if analytic else "env steps"),
    ]
    stage_dir = experiment_dir / stage
    if resume and tune.Tuner.can_restore(str(stage_dir)):
        tuner = tune.Tuner.restore(str(stage_dir), trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"ftcl_trial": tune.grid_search([p.key for p in plans])},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=spec.resources.max_concurrent_trials,
                trial_name_creator=lambda t: t.config["ftcl_trial"],
                trial_dirname_creator=lambda t: t.config["ftcl_trial"],
            ),
            run_config=tune.RunConfig(
                name=stage,
                storage_path=str(experiment_dir),
                callbacks=callbacks,
                verbose=0,
                checkpoint_config=tune.CheckpointConfig(
                    checkpoint_frequency=0 if analytic else spec.resources.checkpoint_every_iterations,
                    checkpoint_at_end=not analytic,
                    num_to_keep=2,
                ),
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
    results = tuner.fit()
    errors = [r.error for r in results if r.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(results)} {stage} trials failed; first error: {errors[0]}")
    unfinished = [r for r in results if not (r.metrics or {}).get("done")]
    if unfinished:
        raise ExperimentInterrupted(
            f"{stage}: {len(unfinished)} of {len(results)} trials stopped before their budget; "
            f"run the same ftcl command again with --resume"
        )



def run_experiment(
    spec: ExperimentSpec, address: str | None = None, resume: bool = False, pretrain_only: bool = False
) -> Path:
    """Run (or resume) the experiment — or only its pre-training stage; returns its directory."""
    import ray

    if pretrain_only and spec.pretrained.train is None:
        raise SpecError(f"spec {spec.name!r} has no `pretrained.train` section: nothing to pre-train")

    if resume:
        experiment_dir = latest_experiment_dir(spec.name)
        if experiment_dir is None:
            raise SpecError(f"--resume: no earlier run of spec {spec.name!r} under {experiments_root()}")
        spec = ExperimentSpec.model_validate(yaml.safe_load((experiment_dir / "spec.resolved.yaml").read_text()))
        print(f"[ftcl] resuming {experiment_dir}", file=sys.stderr)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        experiment_dir = experiments_root() / f"{spec.name}_{stamp}"
        experiment_dir.mkdir(parents=True)
        (experiment_dir / "spec.resolved.yaml").write_text(
            yaml.safe_dump(spec.model_dump(mode="json", by_alias=True), sort_keys=False)
        )
    group = experiment_dir.name
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address:
        ray.init(address=address, ignore_reinit_error=True)
    else:
        # address="local": always a fresh Ray of our own, even if another cluster runs on this machine.
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, ignore_reinit_error=True,
                 runtime_env={"env_vars": {"FTCL_HOME": str(store.ftcl_home())}})
    try:
        if spec.pretrained.train is not None and not _stage_complete(experiment_dir, spec):
            _run_stage(spec, "pretrain", experiment_dir, group, resume)
        if not pretrain_only:
            _run_stage(spec, "finetune", experiment_dir, group, resume)
    finally:
        ray.shutdown()
    print(f"[ftcl] done: {experiment_dir}\n[ftcl] MLflow experiment {spec.experiment_name!r} at "
          f"{store.tracking_uri(spec.tracking.uri)}; group {group}", file=sys.stderr)
    return experiment_dir


def export_pretrained_artifacts(experiment_dir: Path, spec: ExperimentSpec, out: Path) -> list[Path]:
    """Copy each variant's π* folder (module, data.npz, provenance.json) to `out` (or `out/v<k>`)."""
    import shutil

    variants = spec.variants()
    written = []
    for index in range(len(variants)):
        source = pretrained_dir(experiment_dir, index)
        target = out if len(variants) == 1 else out / f"v{index}"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)
        written.append(target)
    return written
