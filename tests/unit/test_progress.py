"""The progress line counts work done before a `--resume`: Tune reports nothing again for a
trial that had finished, and a restored trial's first result comes after its checkpoint."""
from __future__ import annotations

from types import SimpleNamespace

from ftcl.tracking.callbacks import ProgressPrinter


def test_a_resumed_grid_counts_the_trials_that_finished_before(capsys):
    finished = SimpleNamespace(trial_id="a", status="TERMINATED", last_result={"env_steps": 1000})
    restored = SimpleNamespace(trial_id="b", status="RUNNING", last_result={"env_steps": 400})
    pending = SimpleNamespace(trial_id="c", status="PENDING", last_result={})
    progress = ProgressPrinter("finetune", num_trials=3, steps_per_trial=1000, every_s=0.0)
    progress.on_trial_result(0, [finished, restored, pending], restored, {"env_steps": 500})
    line = capsys.readouterr().err
    assert "1/3 trials done" in line and "1,500/3,000" in line, line
