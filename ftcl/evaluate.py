"""`ftcl evaluate TARGET`: a policy on its env's evaluation suites, with the code the trials use.

TARGET is one of
- a trial checkpoint (`…/<stage>/<trial>/checkpoint_N`, RLlib's `save_to_path` with the learner's
  module: actor and critics), or a trial folder (its latest checkpoint);
- an experiment folder (`spec.resolved.yaml` beside its stage folders): the latest checkpoint of
  every trial of every stage;
- a π* folder (`module/` with `agent.json`): its env comes from `--spec`, else from the
  `provenance.json` beside the folder (what `ftcl pretrain` and the importers write).

For a trial the defaults are the trial's own evaluation: its env options (variant included), its
suites, episodes, `explore`, and seed 10,000 + the trial's seed, so the numbers equal the ones the
trial logged at that checkpoint. Results print as a table and go to MLflow: under the trial's own
run as `evaluate/<suite>/<metric>` at the checkpoint's env step, or, for a π*, in a new run tagged
`ftcl.kind=evaluate`. Bad input (not a checkpoint, an unknown suite, a spec for another env) is a
ValueError naming what is wrong and what is allowed, before anything is evaluated. `--video K`
records the first K episodes of each suite (`ftcl.evaluation.video`), written under `--out` and
logged to the run as artifacts `videos/<env step>/<suite>_ep<k>.mp4`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ftcl.evaluation.suites import EVALUATION_SEED_BASE
from ftcl.evaluation.video import VIDEO_DIR

SPEC_FILE, TRIAL_STATE = "spec.resolved.yaml", "ftcl_trial_state.json"
LEARNER_MODULE = Path("learner_group/learner/rl_module/default_policy")


@dataclass
class Target:
    """One policy to evaluate and where its numbers go."""
    label: str
    module_path: Path
    is_pi_star: bool
    env_name: str
    env_options: dict[str, Any]
    suites: list[str]
    episodes: int
    explore: bool
    seed: int
    experiment: str
    trial_key: str | None = None
    group: str | None = None
    env_steps: int | None = None


def _latest_checkpoint(trial_dir: Path) -> Path | None:
    checkpoints = sorted(trial_dir.glob("checkpoint_*"), key=lambda p: p.name)
    usable = [c for c in checkpoints if (c / LEARNER_MODULE).is_dir()]
    return usable[-1] if usable else None


def _trial_target(checkpoint: Path) -> Target:
    from ftcl.plan import plan_trials, trial_spec
    from ftcl.spec import ExperimentSpec

    trial_dir, stage_dir = checkpoint.parent, checkpoint.parent.parent
    experiment_dir = stage_dir.parent
    if not (experiment_dir / SPEC_FILE).is_file():
        raise ValueError(f"{checkpoint}: no {SPEC_FILE} in {experiment_dir}: a trial checkpoint lies in "
                         "<experiment>/<stage>/<trial>/checkpoint_N")
    spec = ExperimentSpec.model_validate(yaml.safe_load((experiment_dir / SPEC_FILE).read_text()))
    plans = {plan.key: plan for plan in plan_trials(spec, stage_dir.name)} if stage_dir.name in ("pretrain", "finetune") else {}
    if trial_dir.name not in plans:
        raise ValueError(f"{checkpoint}: trial {trial_dir.name!r} is not a {stage_dir.name} trial of spec {spec.name!r}")
    plan = plans[trial_dir.name]
    trial = trial_spec(spec, plan)
    state = json.loads((checkpoint / TRIAL_STATE).read_text()) if (checkpoint / TRIAL_STATE).is_file() else {}
    return Target(label=f"{trial_dir.name} ({checkpoint.name})", module_path=checkpoint / LEARNER_MODULE,
                  is_pi_star=False, env_name=trial.env.name, env_options=dict(trial.env.options),
                  suites=list(trial.evaluation.suites), episodes=trial.evaluation.episodes,
                  explore=trial.evaluation.explore, seed=EVALUATION_SEED_BASE + plan.seed,
                  experiment=spec.experiment_name, trial_key=plan.key, group=experiment_dir.name,
                  env_steps=state.get("env_steps"))


def _pi_star_target(module: Path, spec_path: str | None, overrides: list[str]) -> Target:
    from ftcl.algorithms.pi_star import read_pi_star

    read_pi_star(module)  # ValueError for a folder that is no π*
    if spec_path is not None:
        from ftcl.spec import load_spec

        spec = load_spec(spec_path, overrides)
        env_name, options, experiment = spec.env.name, dict(spec.env.options), spec.experiment_name
        evaluation = spec.evaluation
        suites, episodes, explore = list(evaluation.suites), evaluation.episodes, evaluation.explore
    else:
        provenance = module.parent / "provenance.json"
        if not provenance.is_file():
            raise ValueError(f"{module}: a π* without provenance.json beside it; give --spec SPEC for its env")
        recorded = json.loads(provenance.read_text())
        if "env" not in recorded:
            raise ValueError(f"{provenance} names no env; give --spec SPEC for it")
        env_name, options, experiment = recorded["env"], dict(recorded.get("env_options") or {}), "evaluate"
        suites, episodes, explore = [], 10, False
    return Target(label=f"π* {module}", module_path=module, is_pi_star=True, env_name=env_name, env_options=options,
                  suites=suites, episodes=episodes, explore=explore, seed=EVALUATION_SEED_BASE, experiment=experiment)


def find_targets(target: str | Path, spec_path: str | None = None, overrides: list[str] = ()) -> list[Target]:
    """The policies TARGET names (module doc); ValueError for anything else."""
    path = Path(target).resolve()  # RLlib's checkpoint loader takes absolute paths only
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if (path / "agent.json").is_file() or (path / "module" / "agent.json").is_file():
        return [_pi_star_target(path if (path / "agent.json").is_file() else path / "module", spec_path, list(overrides))]
    if spec_path is not None:
        raise ValueError("--spec names the env of a π*; a trial checkpoint or experiment brings its own spec")
    if (path / LEARNER_MODULE).is_dir():
        return [_trial_target(path)]
    latest = _latest_checkpoint(path)
    if latest is not None:
        return [_trial_target(latest)]
    if (path / SPEC_FILE).is_file():
        trials = sorted(trial for stage in ("pretrain", "finetune") for trial in (path / stage).glob("*")
                        if trial.is_dir() and _latest_checkpoint(trial) is not None)
        if not trials:
            raise ValueError(f"{path}: an experiment folder without a trial checkpoint yet")
        return [_trial_target(_latest_checkpoint(trial)) for trial in trials]
    raise ValueError(f"{path} is none of: a π* folder (agent.json), a trial checkpoint ({LEARNER_MODULE}/), "
                     f"a trial folder (checkpoint_*/), an experiment folder ({SPEC_FILE})")


def resolve_suites(target: Target, asked: list[str]) -> dict[str, dict[str, Any]]:
    """Suite name -> its env options; ValueError naming the env's suites for an unknown one."""
    from ftcl.envs.registry import ENVS

    entry = ENVS[target.env_name]
    options = entry.validate_options(target.env_options)
    available = entry.suites_for(options)
    names = asked or target.suites or list(available)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ValueError(f"unknown suite {unknown[0]!r} for env {target.env_name!r}; allowed: {', '.join(available)}")
    return {name: {**options, **available[name]} for name in names}


def load_policy(target: Target) -> Any:
    if target.is_pi_star:
        from ftcl.algorithms.pi_star import load_pi_star_module

        return load_pi_star_module(target.module_path)
    from ray.rllib.core.rl_module.rl_module import RLModule

    return RLModule.from_checkpoint(str(target.module_path))


def evaluate_target(target: Target, suites: dict[str, dict[str, Any]], episodes: int | None = None,
                    seed: int | None = None, video_episodes: int = 0,
                    video_dir: Path | None = None) -> tuple[dict[str, float], list[Path]]:
    """`evaluate/<suite>/<metric>` of one policy, with the trials' own `evaluate_policy`, and the
    videos of the first `video_episodes` episodes per suite written to `video_dir`."""
    from ftcl.envs.registry import ENVS
    from ftcl.evaluation.suites import evaluate_policy
    from ftcl.evaluation.video import EpisodeRecorder
    from ftcl.trial_config import register_envs

    register_envs()
    entry, module = ENVS[target.env_name], load_policy(target)
    metrics, videos = {}, []
    for name, options in suites.items():
        recorder = EpisodeRecorder(video_episodes) if video_episodes else None
        values = evaluate_policy(module, lambda o=options: entry.make(o), episodes or target.episodes,
                                 seed=target.seed if seed is None else seed, explore=target.explore,
                                 on_frame=recorder.on_frame if recorder else None)
        metrics.update({f"evaluate/{name}/{key}": value for key, value in values.items()})
        if recorder is not None:
            videos += recorder.write(video_dir, name)
    return metrics, videos


def log_to_mlflow(target: Target, metrics: dict[str, float], tracking_uri: str | None, videos: list[Path] = ()) -> str:
    """Log under the trial's run (at its checkpoint's env step) or in a new `evaluate` run; the run id."""
    import time

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from ftcl.tracking.store import ensure_experiment, trial_run, tracking_uri as resolve

    uri = resolve(tracking_uri)
    client, experiment_id = MlflowClient(tracking_uri=uri), ensure_experiment(uri, target.experiment)
    run_id = None
    if target.trial_key is not None:
        run = trial_run(client, experiment_id, target.trial_key, target.group)
        run_id = run.info.run_id if run is not None else None
    if run_id is None:
        run_id = client.create_run(experiment_id, run_name="evaluate", tags={
            "ftcl.kind": "evaluate", "ftcl.evaluated": str(target.module_path)}).info.run_id
        client.set_terminated(run_id, status="FINISHED")
    now, step = int(time.time() * 1000), target.env_steps or 0
    client.log_batch(run_id, metrics=[Metric(key, value, now, step) for key, value in metrics.items()])
    for video in videos:
        client.log_artifact(run_id, str(video), f"{VIDEO_DIR}/{step}")
    return run_id


def evaluate_command(args: Any) -> int:
    """`ftcl evaluate` (its flags in `ftcl.cli`): every target and suite checked before any is run."""
    from ftcl.tracking.store import ftcl_home

    if args.video:
        from ftcl.evaluation.video import check_draws_frames, use_headless_rendering

        use_headless_rendering()
    if args.episodes is not None and args.episodes < 1:
        raise ValueError(f"--episodes {args.episodes}: must be >= 1")
    if args.video < 0:
        raise ValueError(f"--video {args.video}: the number of episodes to record per suite, >= 0")
    targets = find_targets(args.target, args.spec, args.overrides)
    plans = [(target, resolve_suites(target, args.suites)) for target in targets]
    if args.video:
        for env_name, options in {plan[0].env_name: next(iter(plan[1].values())) for plan in plans}.items():
            check_draws_frames(env_name, options, "--video")
    out = Path(args.out) if args.out else ftcl_home() / "evaluate" / Path(args.target).resolve().name
    for target, suites in plans:
        folder = out / (target.trial_key or "pi_star") / f"env_step_{target.env_steps or 0}"
        metrics, videos = evaluate_target(target, suites, args.episodes, args.seed, args.video, folder)
        print(f"{target.label}  [{target.env_name}, seed {target.seed if args.seed is None else args.seed}]")
        for key, value in metrics.items():
            print(f"  {key:<48} {value:10.4g}")
        for video in videos:
            print(f"  video {video}")
        if not args.no_mlflow:
            print(f"  logged to MLflow run {log_to_mlflow(target, metrics, args.tracking_uri, videos)}")
    return 0
