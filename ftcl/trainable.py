"""The Ray Tune trainables of an experiment's trials.

- `FtclTrainable`: one trial that owns one RLlib Algorithm (built from the trial's spec), trains it
  to the env-step budget, reports flat metrics with `env_steps` as the x-axis, runs the spec's
  evaluation suites (and, for fine-tuning, the analyses on π*'s stored states: log-likelihood of
  its actions, layer CKA against θ*, `ftcl.evaluation.analyses`; the per-state log-likelihoods are
  written to `<experiment>/analysis/<stage>/<trial>/state_log_likelihood.npz` and logged to the
  trial's MLflow run at every evaluation; with `evaluation.video_every_env_steps`, videos of one
  episode per suite under `<experiment>/videos/<stage>/<trial>/<env step>/`, logged as
  `videos/<env step>/`), exports π* at the end of a pre-training trial, and
  checkpoints through the Algorithm's own checkpointing (with the per-state record) so Tune can
  resume it.
- `analytic_trainable`: one trial of an analytic toy (no RLlib).

Both take the same Tune parameters: the spec as JSON, the stage's plans by key, the experiment
folder and the `ftcl` command line; `config["ftcl_trial"]` picks the trial's plan.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import tune

from ftcl.evaluation.state_records import ARTIFACT_DIR, FILE_NAME as STATE_RECORD_FILE
from ftcl.evaluation.video import VIDEO_DIR, EpisodeRecorder, use_headless_rendering
from ftcl.plan import TrialPlan, pi_star_paths, pretrained_paths, trial_spec
from ftcl.pretrain.export import export_pretrained
from ftcl.tracking.callbacks import NODE_KEY
from ftcl.trial_config import build_algorithm_config, register_envs
from ftcl.spec import ExperimentSpec

if TYPE_CHECKING:
    from ftcl.evaluation.analyses import FineTuningAnalyses


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat


class RunArtifacts:
    """Logs files as artifacts of the trial's MLflow run (made by `ftcl.tracking.callbacks.MLflowTracking`
    on the driver, found here by its `ftcl.trial` and `ftcl.group` tags). A run that does not exist
    yet is looked up again at the next call; a failure is reported once and never stops the trial."""

    def __init__(self, spec: ExperimentSpec, group: str, trial_key: str) -> None:
        self.uri = spec.tracking.uri
        self.experiment = spec.experiment_name
        self.group = group
        self.trial_key = trial_key
        self.run_id: str | None = None
        self.failed = False

    def log(self, path: Path, artifact_dir: str) -> bool:
        """Log `path` under `artifact_dir` of the run (replacing an earlier file of that name)."""
        if self.failed:
            return False
        try:
            from mlflow.tracking import MlflowClient

            from ftcl.tracking import store

            client = MlflowClient(tracking_uri=store.tracking_uri(self.uri))
            if self.run_id is None:
                experiment = client.get_experiment_by_name(self.experiment)
                run = None if experiment is None else store.trial_run(client, experiment.experiment_id,
                                                                       self.trial_key, self.group)
                if run is None:
                    return False
                self.run_id = run.info.run_id
            client.log_artifact(self.run_id, str(path), artifact_dir)
            return True
        except Exception as error:  # tracking must not end a trial: MLflow raises many kinds of errors
            self.failed = True
            print(f"[ftcl] {self.trial_key}: logging {path.name} to MLflow failed ({type(error).__name__}: "
                  f"{error}); it stays at {path}", file=sys.stderr)
            return False


class FtclTrainable(tune.Trainable):
    """One trial: an RLlib Algorithm trained to the env-step budget, with evaluation suites."""

    def setup(self, config: dict, spec_json: str, plans: dict, experiment_dir: str, command: str) -> None:
        import torch

        import ray

        torch.set_num_threads(1)
        register_envs()
        self.node_id = ray.get_runtime_context().get_node_id()  # reported with every result (NODE_KEY)
        self.spec = ExperimentSpec.model_validate_json(spec_json)
        if self.spec.evaluation.video_every_env_steps:
            use_headless_rendering()  # before any env of this process draws a frame
        self.plan = TrialPlan(**plans[config["ftcl_trial"]])
        self.trial = trial_spec(self.spec, self.plan)
        self.experiment_dir = Path(experiment_dir)
        self.command = command
        module_path, data_path = pretrained_paths(self.spec, self.experiment_dir, self.plan)
        if self.plan.stage == "pretrain" and self.trial.pretrained.train.demonstrations is not None:
            from ftcl.pretrain.demonstrations import ensure_demonstrations

            ensure_demonstrations(self.trial, self.experiment_dir, self.plan)
        self.algo = build_algorithm_config(self.trial, self.plan, module_path, data_path).build_algo()
        self.env_steps = 0
        self.next_evaluation = 0
        self.next_video = 0  # env step from which the next evaluation is recorded (`evaluation.video_every_env_steps`)
        self.videos_to_log: list[tuple[Path, str]] = []  # written, not yet in MLflow (the run may not exist yet)
        self.last_time = time.time()
        self.analyses: FineTuningAnalyses | None = None  # on π*'s stored states, loaded at the first evaluation
        self.mlflow_artifacts = RunArtifacts(self.spec, group=self.experiment_dir.name, trial_key=self.plan.key)
        self.record_logged = True  # whether the latest state record reached MLflow

    # ---- evaluation ----
    def _evaluate(self) -> dict[str, float]:
        """Evaluation suites (success, return, length) and, for fine-tuning trials, the analyses on
        π*'s stored states (`FineTuningAnalyses`: log-likelihood of its actions, paper Fig. 8; layer
        CKA against θ*, Fig. 20)."""
        from ftcl.envs.registry import ENVS
        from ftcl.evaluation.suites import EVALUATION_SEED_BASE, evaluate_policy

        evaluation = self.trial.evaluation
        if not evaluation.active:
            return {}
        entry = ENVS[self.trial.env.name]
        options = entry.validate_options(self.trial.env.options)
        suites = entry.suites_for(options)
        module = self.algo.get_module()
        metrics = {}
        recording = evaluation.video_every_env_steps is not None and self.env_steps >= self.next_video
        for suite in evaluation.suites:
            suite_options = {**options, **suites[suite]}
            recorder = EpisodeRecorder(episodes=1) if recording else None
            values = evaluate_policy(
                module, lambda: entry.make(suite_options), evaluation.episodes,
                seed=EVALUATION_SEED_BASE + self.plan.seed, explore=evaluation.explore,
                on_frame=recorder.on_frame if recorder else None,
            )
            metrics.update({f"evaluation/{suite}/{k}": v for k, v in values.items()})
            if recorder is not None:
                folder = self.experiment_dir / VIDEO_DIR / self.plan.stage / self.plan.key / str(self.env_steps)
                self.videos_to_log += [(path, f"{VIDEO_DIR}/{self.env_steps}") for path in recorder.write(folder, suite)]
        if recording:
            every = evaluation.video_every_env_steps
            self.next_video = (self.env_steps // every + 1) * every
            self._log_videos()
        if self.plan.stage == "finetune" and self._analyses().active:
            started = time.perf_counter()
            metrics.update(self._analyses().evaluate(self.env_steps, module, self._learner_activations))
            metrics["throughput/analysis_s"] = time.perf_counter() - started  # the analyses' cost
            self._write_state_record()
        return metrics

    def _log_videos(self) -> None:
        """Log the written videos to the trial's run; those that did not reach it stay for the next try."""
        self.videos_to_log = [(path, folder) for path, folder in self.videos_to_log
                              if not self.mlflow_artifacts.log(path, folder)]

    def _analyses(self) -> FineTuningAnalyses:
        """The trial's analyses on the spec's π* (`pi_star_paths`: scratch trials read it too)."""
        if self.analyses is None:
            from ftcl.envs.registry import ENVS
            from ftcl.evaluation.analyses import FineTuningAnalyses

            module_path, data_path = pi_star_paths(self.spec, self.experiment_dir, self.plan.variant_index)
            evaluation = self.trial.evaluation
            self.analyses = FineTuningAnalyses(
                env_name=self.trial.env.name,
                env_options=ENVS[self.trial.env.name].validate_options(self.trial.env.options),
                log_likelihood_suites=evaluation.log_likelihood_suites, cka=evaluation.cka,
                module_path=module_path, data_path=data_path, label=self.plan.key,
            )
        return self.analyses

    def _learner_activations(self, observations: Any, actions: Any, networks: list[str]) -> dict[str, list[Any]]:
        """Layer activations of the learner's module (actor and critics; the env runners' module is
        the actor alone) on (s*, a*)."""
        from ray.rllib.core import DEFAULT_MODULE_ID

        from ftcl.evaluation.cka import layer_activations

        def activations(learner, _obs=observations, _actions=actions, _networks=networks):
            return layer_activations(learner.module[DEFAULT_MODULE_ID].unwrapped(), _obs, _actions, _networks)

        errors = []
        for result in self.algo.learner_group.foreach_learner(activations):
            if result.ok:  # DDP learners hold the same weights: the first answer is enough
                return result.get()
            errors.append(result.get())
        raise RuntimeError(f"no learner returned its activations: {errors}")

    def _state_record_path(self) -> Path:
        return self.experiment_dir / ARTIFACT_DIR / self.plan.stage / self.plan.key / STATE_RECORD_FILE

    def _write_state_record(self) -> None:
        """Rewrite the per-state record and log it as the run's MLflow artifact (`ARTIFACT_PATH`)."""
        path = self.analyses.save_record(self._state_record_path()) if self.analyses else None
        if path is not None:
            self.record_logged = self.mlflow_artifacts.log(path, ARTIFACT_DIR)

    # ---- training ----
    def step(self) -> dict:
        budget = self.trial.budget.env_steps
        metrics: dict[str, Any] = {}
        if self.env_steps == 0 and self.next_evaluation == 0 and self.trial.evaluation.active:
            # A point at env step 0: π* (or the random init) before any update.
            metrics = self._evaluate()
            self.next_evaluation = self.trial.evaluation.every_env_steps
            return {**metrics, "env_steps": 0, "ftcl_trial": self.plan.key, NODE_KEY: self.node_id, "done": False}
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
            export_pretrained(self.algo, self.spec, self.trial, self.plan, self.experiment_dir, steps, self.command)
        return {**metrics, "env_steps": steps, "ftcl_trial": self.plan.key, NODE_KEY: self.node_id, "done": done}

    # ---- checkpoints ----
    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self.algo.save_to_path(checkpoint_dir)
        state = {"env_steps": self.env_steps, "next_evaluation": self.next_evaluation, "next_video": self.next_video}
        (Path(checkpoint_dir) / "ftcl_trial_state.json").write_text(json.dumps(state))
        if self.analyses is not None:  # the per-state record so far: a resumed trial continues it
            self.analyses.save_record(Path(checkpoint_dir) / STATE_RECORD_FILE)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        self.algo.restore_from_path(checkpoint_dir)
        state = json.loads((Path(checkpoint_dir) / "ftcl_trial_state.json").read_text())
        self.env_steps, self.next_evaluation = state["env_steps"], state["next_evaluation"]
        self.next_video = state.get("next_video", 0)  # checkpoints written before videos existed
        self.last_time = time.time()
        if self.plan.stage == "finetune":
            self._analyses().restore_record(Path(checkpoint_dir) / STATE_RECORD_FILE)

    def cleanup(self) -> None:
        if not getattr(self, "record_logged", True) and self._state_record_path().is_file():  # run not found before
            self.mlflow_artifacts.log(self._state_record_path(), ARTIFACT_DIR)
        self._log_videos()
        self.algo.stop()


def analytic_trainable(config: dict, spec_json: str, plans: dict, experiment_dir: str, command: str) -> None:
    """One trial of an analytic toy: the toy's own training loop, reporting to Tune itself."""
    from ftcl.envs.toys import two_state_mdp_trainable

    spec = ExperimentSpec.model_validate_json(spec_json)
    plan = TrialPlan(**plans[config["ftcl_trial"]])
    trial = trial_spec(spec, plan)
    two_state_mdp_trainable({**trial.algorithm.options, "steps": trial.budget.env_steps})
