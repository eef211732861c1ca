"""The progress line counts work done before a `--resume`: Tune reports nothing again for a
trial that had finished, and a restored trial's first result comes after its checkpoint."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from ftcl.tracking.callbacks import ProgressPrinter


def test_a_resumed_grid_counts_the_trials_that_finished_before(capsys):
    finished = SimpleNamespace(trial_id="a", status="TERMINATED", last_result={"env_steps": 1000})
    restored = SimpleNamespace(trial_id="b", status="RUNNING", last_result={"env_steps": 400})
    pending = SimpleNamespace(trial_id="c", status="PENDING", last_result={})
    progress = ProgressPrinter("finetune", num_trials=3, steps_per_trial=1000, every_s=0.0)
    progress.on_trial_result(0, [finished, restored, pending], restored, {"env_steps": 500})
    line = capsys.readouterr().err
    assert "1/3 trials done" in line and "1,500/3,000" in line, line


def test_the_rate_and_eta_follow_the_recent_pace_not_the_whole_runs_average():
    """A quickstart-like run: 5k fast steps (no updates yet), then a tenth of the pace. After the
    window has passed, the rate is the slow pace, so the ETA is right; a cumulative average would
    still be lifted by the fast start."""
    progress = ProgressPrinter("finetune", num_trials=1, steps_per_trial=20_000, window_s=300.0)
    progress.rate(0.0, 0)
    t, done = 0.0, 0
    for _ in range(50):  # 100 steps/s for 50 s
        t, done = t + 1.0, done + 100
        progress.rate(t, done)
    for _ in range(60):  # then 10 steps/s, a line every 10 s, for 600 s
        t, done = t + 10.0, done + 100
        rate = progress.rate(t, done)
    assert rate == pytest.approx(10.0, rel=0.05)
    assert done / t > 15, "the whole run's average is still well above the pace"
