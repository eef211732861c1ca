"""The Ray Tune trainables of an experiment's trials.

- `FtclTrainable`: one trial that owns one RLlib Algorithm (built from the trial's spec), trains it
  to the env-step budget, reports flat metrics with `env_steps` as the x-axis, runs the spec's
  evaluation suites (and, for fine-tuning, the log-likelihood of π*'s stored actions), exports π*
  at the end of a pre-training trial, and checkpoints through the Algorithm's own checkpointing so
  Tune can resume it.
- `analytic_trainable`: one trial of an analytic toy (no RLlib).

Both take the same Tune parameters: the spec as JSON, the stage's plans by key, the experiment
folder and the `ftcl` command line; `config["ftcl_trial"]` picks the trial's plan.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from ray import tune

from ftcl.plan import TrialPlan, pi_star_paths, pretrained_paths, trial_spec
from ftcl.pretrain.export import export_pretrained
from ftcl.trial_config import build_algorithm_config, register_envs
from ftcl.spec import ExperimentSpec


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat


class FtclTrainable(tune.Trainable):
    """One trial: an RLlib Algorithm trained to the env-step budget, with evaluation suites."""

    def setup(self, config: dict, spec_json: str, plans: dict, experiment_dir: str, command: str) -> None:
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
            from ftcl.pretrain.demonstrations import ensure_demonstrations

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
            from ftcl.data.retention_data import load_retention_data

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

    # ---- training ----
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
            export_pretrained(self.algo, self.spec, self.trial, self.plan, self.experiment_dir, steps, self.command)
        return {**metrics, "env_steps": steps, "ftcl_trial": self.plan.key, "done": done}

    # ---- checkpoints ----
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


def analytic_trainable(config: dict, spec_json: str, plans: dict, experiment_dir: str, command: str) -> None:
    """One trial of an analytic toy: the toy's own training loop, reporting to Tune itself."""
    from ftcl.envs.toys import two_state_mdp_trainable

    spec = ExperimentSpec.model_validate_json(spec_json)
    plan = TrialPlan(**plans[config["ftcl_trial"]])
    trial = trial_spec(spec, plan)
    two_state_mdp_trainable({**trial.algorithm.options, "steps": trial.budget.env_steps})
