"""GPU learners and env runners from the spec to RLlib and to what a trial asks Tune for
(resolution only: these machines have no GPU; a GPU node runs the same config)."""
from __future__ import annotations

import pytest

from ftcl.plan import plan_trials
from ftcl.spec import REPO_ROOT, SpecError, load_spec
from ftcl.trial_config import build_algorithm_config, trial_resources

APPLE = REPO_ROOT / "tune_configs/toys/apple_retrieval.yaml"


def first_trial(*overrides: str):
    spec = load_spec(APPLE, ["methods=[{name: scratch}]", "pretrained={}", "seeds=[0]", *overrides])
    return spec, plan_trials(spec, "finetune")[0]


def bundles(*overrides: str) -> list[dict]:
    return trial_resources(*first_trial(*overrides)).bundles


def test_no_gpu_by_default():
    assert all("GPU" not in bundle or bundle["GPU"] == 0 for bundle in bundles())


def test_a_learner_actor_with_a_gpu():
    spec, plan = first_trial("resources.num_learners=1", "resources.gpus_per_learner=1")
    config = build_algorithm_config(spec, plan, None, None)
    assert config.num_learners == 1 and config.num_gpus_per_learner == 1
    assert sum(bundle.get("GPU", 0) for bundle in trial_resources(spec, plan).bundles) == 1


def test_the_trials_own_learner_takes_a_fraction_of_a_gpu():
    found = bundles("resources.gpus_per_learner=0.5")
    assert found[0].get("GPU") == 0.5, found  # the trial's process (learner 0 runs in it)


def test_env_runners_get_their_gpu_share():
    found = bundles("algorithm.num_env_runners=2", "resources.gpus_per_env_runner=0.25")
    assert sorted(bundle.get("GPU", 0) for bundle in found)[-2:] == [0.25, 0.25], found


def test_gpus_for_an_analytic_toy_are_refused():
    with pytest.raises(SpecError, match="an analytic toy runs in one process"):
        load_spec(REPO_ROOT / "tune_configs/toys/two_state_mdp.yaml", ["resources.gpus_per_learner=1"])
    with pytest.raises(SpecError, match="resources.gpus_per_learner: must be greater than or equal to 0"):
        first_trial("resources.gpus_per_learner=-1")
