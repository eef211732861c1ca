"""Spec -> RLlib AlgorithmConfig -> Ray Tune grid over methods × seeds (× extra grid variants).

An experiment is one `ftcl run` invocation ("group"), stored in `<ftcl home>/ray_results/<group>/`:
- `spec.resolved.yaml` — the validated spec that produced it (what `--resume` reloads);
- `pretrain/` — a Tune experiment that trains π* per grid variant (only when the spec says
  `pretrained.train`); each π* is exported to `pretrained/<variant>/{module,data.npz,provenance.json}`;
- `finetune/` — the Tune experiment of the fine-tuning grid.

This module tags each trial's MLflow run (`run_tags`) and runs the stages through Ray Tune
(`run_experiment`). The trials are planned in `ftcl.plan`, their RLlib configs built by
`ftcl.trial_config`, run as the trainables of `ftcl.trainable`, and π* is exported by
`ftcl.pretrain.export`.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from ftcl.plan import TrialPlan, plan_trials, pretrained_dir, pretrained_paths, trial_spec
from ftcl.spec import ANALYTIC_ALGORITHMS, ExperimentSpec, SpecError, variant_label
from ftcl.tracking import store
from ftcl.trial_config import register_envs, trial_resources



class ExperimentInterrupted(RuntimeError):
    """Trials stopped before their budget (Ctrl-C, a lost node); `--resume` continues them."""


# ----- experiments ----------------------------------------------------------------------------------
def experiments_root() -> Path:
    """Where experiments are stored: `<ftcl home>/ray_results`."""
    return store.ftcl_home() / "ray_results"


def latest_experiment_dir(spec_name: str) -> Path | None:
    """The newest experiment folder of a spec (the one `--resume` continues), if any."""
    candidates = sorted(experiments_root().glob(f"{spec_name}_2*"))
    candidates = [c for c in candidates if (c / "spec.resolved.yaml").is_file()]
    return candidates[-1] if candidates else None


def _stage_complete(experiment_dir: Path, spec: ExperimentSpec) -> bool:
    return all(
        (pretrained_dir(experiment_dir, i) / "provenance.json").is_file() for i in range(len(spec.variants()))
    )


def run_tags(spec: ExperimentSpec, plan: TrialPlan, group: str, module_path: Path | None) -> dict[str, str]:
    """The MLflow tags of one trial's run: method, seed, env, group, stage, variant, code and π* identity."""
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


def _run_stage(spec: ExperimentSpec, stage: str, experiment_dir: Path, group: str, resume: bool,
               verbose: bool = False) -> None:
    from ray import tune

    from ftcl.tracking.callbacks import MLflowTracking, ProgressPrinter
    from ftcl.trainable import FtclTrainable, analytic_trainable

    plans = plan_trials(spec, stage)
    plan_dicts = {p.key: p.as_dict() for p in plans}
    # Trials log artifacts to the driver's store, wherever they run: its URI goes with the spec (a
    # worker node's own MLFLOW_TRACKING_URI or FTCL_HOME would name another store, or none).
    resolved_tracking = spec.tracking.model_copy(update={"uri": store.tracking_uri(spec.tracking.uri)})
    spec_json = spec.model_copy(update={"tracking": resolved_tracking}).model_dump_json(by_alias=True)
    analytic = spec.algorithm.name in ANALYTIC_ALGORITHMS
    base = analytic_trainable if analytic else FtclTrainable
    command = command_line()
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
                verbose=2 if verbose else 0,  # Tune's trial tables only when asked: ftcl prints its own progress
                checkpoint_config=tune.CheckpointConfig(
                    checkpoint_frequency=0 if analytic else spec.resources.checkpoint_every_iterations,
                    checkpoint_at_end=not analytic,
                    num_to_keep=2,
                ),
                failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
            ),
        )
    results = tuner.fit()
    failed = [r for r in results if r.error is not None]
    if failed:
        first = failed[0]
        text = str(first.error).strip().splitlines()
        where = f"; traceback in {Path(first.path) / 'error.txt'}" if first.path else ""
        raise RuntimeError(
            f"{len(failed)} of {len(results)} {stage} trials failed after {spec.resources.max_failures} "
            f"restart(s) each; first: {(first.config or {}).get('ftcl_trial', '?')}: {text[-1] if text else first.error}"
            f"{where}; fix the cause, then `{resume_command()}` retries them from their last checkpoints"
        )
    unfinished = [r for r in results if not (r.metrics or {}).get("done")]
    if unfinished:
        raise ExperimentInterrupted(
            f"{stage}: {len(unfinished)} of {len(results)} trials stopped before their budget; "
            f"continue them with: {resume_command()}"
        )


def spec_differences(saved: ExperimentSpec, given: ExperimentSpec) -> list[str]:
    """`field: saved → given` for every dotted field in which two specs differ."""
    def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(tree, dict) and tree:
            return {k: v for key, value in tree.items() for k, v in flat(value, f"{prefix}{key}.").items()}
        return {prefix.rstrip("."): tree}

    old, new = flat(saved.model_dump(mode="json", by_alias=True)), flat(given.model_dump(mode="json", by_alias=True))
    return [f"{key}: {old.get(key)!r} → {new.get(key)!r}" for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)]


def command_line(argv: list[str] | None = None) -> str:
    """This `ftcl` invocation as a shell command line (recorded in provenance)."""
    return "ftcl " + " ".join(shlex.quote(arg) for arg in (sys.argv[1:] if argv is None else argv))


def resume_command(argv: list[str] | None = None) -> str:
    """The command line that continues this `ftcl` invocation: the same one with `--resume`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--resume" not in argv:
        argv.append("--resume")
    return command_line(argv)


def trial_environment() -> dict[str, str]:
    """Environment variables every local trial process gets: the ftcl home, extra retention-method
    files and the tracking server's credentials."""
    from ftcl.retention.registry import METHOD_FILES_VARIABLE

    variables = {"FTCL_HOME": str(store.ftcl_home())}
    for name in (METHOD_FILES_VARIABLE, *store.CREDENTIAL_VARIABLES):  # trials log artifacts to the server too
        if os.environ.get(name):
            variables[name] = os.environ[name]
    return variables


ADDRESS_CONNECT_TIMEOUT_S = 10.0


def check_address(address: str) -> None:
    """SpecError unless `address` is `auto`, `HOST:PORT` or `ray://HOST:PORT` and, for the last two,
    something listens there (a dead address would make `ray.init` retry for minutes)."""
    if address == "auto":
        return
    match = re.fullmatch(r"(ray://)?\[?([A-Za-z0-9_.\-:]+?)\]?:(\d{1,5})", address)
    if match is None or not 0 < int(match.group(3)) < 65536:
        raise SpecError(f"--address {address!r}: expected auto, HOST:PORT (a Ray head's GCS, e.g. 10.0.0.5:6379) "
                        "or ray://HOST:PORT (Ray Client, e.g. ray://head-node:10001)")
    host, port = match.group(2), int(match.group(3))
    reason = store.connection_failure(host, port, ADDRESS_CONNECT_TIMEOUT_S)
    if reason is not None:
        raise SpecError(f"--address {address!r}: cannot reach a Ray cluster at {host}:{port} ({reason} after at most "
                        f"{ADDRESS_CONNECT_TIMEOUT_S:.0f} s); is it running? (`ray status --address {host}:{port}` "
                        "on the head node)") from None


def run_experiment(
    spec: ExperimentSpec, address: str | None = None, resume: bool = False, pretrain_only: bool = False,
    verbose: bool = False,
) -> Path:
    """Run (or resume) the experiment — or only its pre-training stage; returns its directory."""
    import ray

    if address:
        check_address(address)  # before anything is written
    if spec.pretrained.clone is not None:
        raise SpecError(f"spec {spec.name!r}: pretrained.clone is made by `ftcl pretrain SPEC --out DIR` (a clone, "
                        "outside Tune); fine-tune from it with pretrained.module: DIR/module and pretrained.data: DIR/data")
    if pretrain_only and spec.pretrained.train is None:
        raise SpecError(f"spec {spec.name!r} has no `pretrained.train` section: nothing to pre-train")

    if resume:
        experiment_dir = latest_experiment_dir(spec.name)
        if experiment_dir is None:
            raise SpecError(f"--resume: no earlier run of spec {spec.name!r} under {experiments_root()}")
        saved = ExperimentSpec.model_validate(yaml.safe_load((experiment_dir / "spec.resolved.yaml").read_text()))
        changed = spec_differences(saved, spec)
        if changed:
            raise SpecError(
                f"--resume continues {experiment_dir} with the spec it started with, and the spec given now differs "
                f"({'; '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}); give the same spec and --set "
                "overrides as the first run, or start a new run without --resume"
            )
        spec = saved
        print(f"[ftcl] resuming {experiment_dir}", file=sys.stderr)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        experiment_dir = experiments_root() / f"{spec.name}_{stamp}"
    group = experiment_dir.name
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address:
        try:
            ray.init(address=address, ignore_reinit_error=True)
        except ConnectionError as error:  # `auto` with no cluster here, or no Ray behind HOST:PORT
            raise SpecError(f"--address {address!r}: {str(error).splitlines()[0]}") from None
    else:
        # address="local": always a fresh Ray of our own, even if another cluster runs on this machine.
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, ignore_reinit_error=True,
                 runtime_env={"env_vars": trial_environment()})
    if not resume:  # written only once Ray is up: a bad --address leaves no experiment folder behind
        experiment_dir.mkdir(parents=True)
        (experiment_dir / "spec.resolved.yaml").write_text(
            yaml.safe_dump(spec.model_dump(mode="json", by_alias=True), sort_keys=False)
        )
    try:
        if spec.pretrained.train is not None and not _stage_complete(experiment_dir, spec):
            _run_stage(spec, "pretrain", experiment_dir, group, resume, verbose)
        if not pretrain_only:
            _run_stage(spec, "finetune", experiment_dir, group, resume, verbose)
    finally:
        ray.shutdown()
    print(f"[ftcl] done: {experiment_dir}\n[ftcl] MLflow experiment {spec.experiment_name!r} at "
          f"{store.tracking_uri(spec.tracking.uri)}; group {group}", file=sys.stderr)
    return experiment_dir

