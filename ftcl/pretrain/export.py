"""Exporting a pre-trained π*.

`export_pretrained` writes what the pre-training trial of a grid variant leaves in the experiment
folder, `pretrained/v<k>/`:
- `module/` — π*, the whole agent of the learner (actor, critics, SAC's α; `ftcl.algorithms.pi_star`);
- `data.npz` — transitions collected by π* (the retention data of the fine-tuning methods);
- `provenance.json` — command, spec, env, budget, seed, what π* holds (tensors and parameters per
  part, α), π*'s success per evaluation suite, the demonstrations that guided it, git SHA, package
  versions and the SHA-256 of both files.
`export_pretrained_artifacts` copies those folders to the place `ftcl pretrain --out` names.
"""
from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ftcl.data.integrity import write_provenance
from ftcl.plan import TrialPlan, demonstrations_path, pretrained_dir
from ftcl.spec import ExperimentSpec
from ftcl.tracking import store

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm import Algorithm

EVALUATION_EPISODES = 20
"""Episodes per success estimate in provenance.json (at most; fewer when the spec's evaluation runs fewer)."""


def export_pretrained(algo: Algorithm, spec: ExperimentSpec, trial: ExperimentSpec, plan: TrialPlan,
                      experiment_dir: Path, env_steps: int, command: str) -> Path:
    """Write π* (RLModule checkpoint), its retention data and a provenance file for one variant."""
    from ftcl.envs.registry import ENVS
    from ftcl.evaluation.suites import evaluate_policy
    from ftcl.data.retention_data import save_retention_data
    from ftcl.pretrain.data import collect_policy_data
    from ftcl.pretrain.demonstrations import pretraining_method

    out = pretrained_dir(experiment_dir, plan.variant_index)
    out.mkdir(parents=True, exist_ok=True)
    written = algo.learner_group.foreach_learner(lambda learner: learner.export_pi_star(str(out / "module")))
    contents = next(result.get() for result in written if result.get() is not None)
    module = algo.get_module()  # the EnvRunner's actor: the same weights as the learner's
    entry = ENVS[trial.env.name]
    options = entry.validate_options(trial.env.options)
    env = entry.make(options)
    try:
        data = collect_policy_data(module, env, trial.pretrained.train.data_transitions, seed=plan.seed)
    finally:
        env.close()
    save_retention_data(out / "data.npz", data)
    episodes = min(EVALUATION_EPISODES, max(trial.evaluation.episodes, 1))
    success = evaluate_policy(module, lambda: entry.make(options), episodes=episodes, seed=20_000 + plan.seed)
    suites = entry.suites_for(options)
    success_per_suite = {
        suite: evaluate_policy(module, lambda: entry.make({**options, **suites[suite]}),
                               episodes=episodes, seed=20_000 + plan.seed)
        for suite in trial.evaluation.suites
    }
    demonstrations = trial.pretrained.train.demonstrations
    if demonstrations is not None:
        demonstrations_file = demonstrations_path(experiment_dir, plan.variant_index)
        from ftcl.data.retention_data import retention_data_shapes

        rows = retention_data_shapes(demonstrations_file)["obs"][0]
        guidance = {**demonstrations.model_dump(), "rows": rows, "method": pretraining_method(trial, rows),
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
        "contents": contents,
        "success_on_pretraining_task": success,
        "success_per_evaluation_suite": success_per_suite,
        "evaluation_episodes": episodes,
        "demonstrations": guidance,
        "git_sha": store.git_sha(),
        "versions": store.package_versions(),
        "created": datetime.now().isoformat(timespec="seconds"),
        "sha256": {"module": store.sha256_of(out / "module"), "data.npz": store.sha256_of(out / "data.npz")},
    }
    write_provenance(out, provenance)  # last and whole: a folder without it is unfinished
    return out


def export_pretrained_artifacts(experiment_dir: Path, spec: ExperimentSpec, out: Path) -> list[Path]:
    """Copy each variant's π* folder (module, data.npz, provenance.json) to `out` (or `out/v<k>`)."""
    variants = spec.variants()
    written = []
    for index in range(len(variants)):
        source = pretrained_dir(experiment_dir, index)
        target = out if len(variants) == 1 else out / f"v{index}"
        partial = target.with_name(target.name + ".partial")  # copied whole, then renamed into place
        if partial.exists():
            shutil.rmtree(partial)
        shutil.copytree(source, partial)
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)
        written.append(target)
    return written
