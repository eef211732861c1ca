"""Ray Tune callbacks: MLflow tracking against environment steps, and a progress line.

Why not `ray.air.integrations.mlflow.MLflowLoggerCallback`: it steps metrics by
`timesteps_total` (unset on RLlib's new stack, so curves fall back to training iterations), logs
hundreds of keys one request each, and puts artifacts in `./mlruns`. This callback logs only the
whitelisted keys, in one batch per result, with step = environment steps, and finds its run again
after `ftcl run --resume` by the trial id tag.

Exactly once, whatever the fault. A trial's results are held on the driver and written to MLflow
when the trial's next checkpoint is saved (and when it completes). A trial that fails and is
retried, or that is resumed after the driver died, restarts from its last checkpoint and produces
the steps after it again: those were never written, so each `(run, key, step)` ends up in MLflow
once, with the value of the timeline that goes on — the curve is the restored run's, and the agent
at the end of it is the one whose history it shows. The cost: MLflow trails a running trial by up
to one checkpoint interval (`resources.checkpoint_every_iterations`). As a second guard, a run
found again after a restart reads how far each key was written and never writes a step at or
below that again (this covers a driver that dies after writing but before Tune recorded the
checkpoint; then the steps in between keep their first values).
"""
from __future__ import annotations

import collections
import fnmatch
import math
import sys
import time
from typing import Any

from ray.tune import Callback

from ftcl.tracking.store import trial_run

# Result keys worth a curve (fnmatch patterns). Trials report flat keys, see ftcl.trainable.FtclTrainable.
METRIC_WHITELIST = (
    "env_runners/episode_return_mean",
    "env_runners/episode_len_mean",
    "env_runners/num_episodes_lifetime",
    "env_runners/ftcl/*",
    "evaluation/*",
    "analysis/*",
    "learners/*/policy_loss",
    "learners/*/vf_loss",
    "learners/*/vf_loss_intrinsic",
    "learners/*/rnd_loss",
    "learners/*/intrinsic_reward_mean",
    "learners/*/total_loss",
    "learners/*/entropy",
    "learners/*/mean_kl_loss",
    "learners/*/qf_loss",
    "learners/*/alpha_loss",
    "learners/*/alpha_value",
    "learners/*/returns_mean",
    "learners/*/returns_std",
    "learners/*/retention_*",
    "learners/*/num_trainable_parameters",
    "num_env_steps_sampled_lifetime",
    "throughput/*",
    "theta",
    "value_s0",
)
STEP_KEYS = ("env_steps", "gradient_step")
NODE_KEY = "ftcl_node_id"
"""Result key: the Ray node id the trial ran on; the run's tag `ftcl.nodes` lists them in order (a
trial restored on another node after a node loss adds one)."""


def step_of(result: dict[str, Any]) -> int:
    """The x-axis of a result: environment steps (or gradient steps for analytic toys)."""
    for key in STEP_KEYS:
        if key in result:
            return int(result[key])
    raise KeyError(f"result has none of {STEP_KEYS}")


def select_metrics(result: dict[str, Any], extra_patterns: tuple[str, ...] = ()) -> dict[str, float]:
    patterns = METRIC_WHITELIST + tuple(extra_patterns)
    selected = {}
    for key, value in result.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isnan(value) or math.isinf(value):
            continue
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns):
            selected[key] = float(value)
    return selected


class MLflowTracking(Callback):
    """One MLflow run per trial, tagged for grouping; metrics stepped by environment steps."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        run_tags: dict[str, dict[str, str]],
        params: dict[str, dict[str, Any]],
        artifacts: list[str] = (),
        extra_patterns: tuple[str, ...] = (),
    ):
        """`run_tags`/`params` are keyed by the trial's `ftcl_trial` config value."""
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_tags = run_tags
        self.params = params
        self.artifacts = list(artifacts)
        self.extra_patterns = tuple(extra_patterns)
        self._client = None
        self._experiment_id: str | None = None
        self._run_ids: dict[str, str] = {}
        self._pending: dict[str, list] = {}
        """Trial key -> metrics of results since its last checkpoint (not yet in MLflow)."""
        self._written_through: dict[str, dict[str, int]] = {}
        """Trial key -> metric key -> the highest step of it in MLflow."""
        self._ended: set[str] = set()
        """Trial keys whose run this driver marked FINISHED or FAILED."""
        self._nodes: dict[str, list[str]] = {}
        """Trial key -> the nodes it ran on, in order (the run's `ftcl.nodes` tag)."""

    def __getstate__(self) -> dict:  # Tune pickles callbacks into its experiment state
        state = dict(self.__dict__)
        state.update(_client=None, _run_ids={}, _pending={}, _written_through={}, _ended=set(), _nodes={})
        return state

    def __setstate__(self, state: dict) -> None:  # also an experiment state pickled by an older ftcl
        self.__dict__.update({"_pending": {}, "_written_through": {}, "_ended": set(), "_nodes": {}, **state})

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            from ftcl.tracking.store import ensure_experiment

            self._experiment_id = ensure_experiment(self.tracking_uri, self.experiment_name)
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def _run_id(self, trial) -> str:
        key = trial.config["ftcl_trial"]
        if key in self._run_ids:
            return self._run_ids[key]
        client = self.client
        tags = self.run_tags[key]
        existing = trial_run(client, self._experiment_id, key, tags["ftcl.group"])
        if existing is not None:
            run_id = existing.info.run_id
            client.update_run(run_id, status="RUNNING")
            self._written_through[key] = {
                name: max(point.step for point in client.get_metric_history(run_id, name))
                for name in existing.data.metrics
            }
        else:
            run = client.create_run(self._experiment_id, run_name=key, tags={**tags, "ftcl.trial": key})
            run_id = run.info.run_id
            from mlflow.entities import Param

            client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in self.params[key].items()])
            for path in self.artifacts:
                client.log_artifact(run_id, path)
        self._run_ids[key] = run_id
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric

        run_id = self._run_id(trial)
        node = result.get(NODE_KEY)
        nodes = self._nodes.setdefault(trial.config["ftcl_trial"], [])
        if isinstance(node, str) and nodes[-1:] != [node]:
            nodes.append(node)
            self.client.set_tag(run_id, "ftcl.nodes", ",".join(nodes))
        step = step_of(result)
        now = int(time.time() * 1000)
        self._pending.setdefault(trial.config["ftcl_trial"], []).extend(
            Metric(k, v, now, step) for k, v in select_metrics(result, self.extra_patterns).items()
        )

    def _write_pending(self, trial) -> None:
        """Write the trial's held metrics (those at or below a step already in MLflow are dropped)."""
        key = trial.config["ftcl_trial"]
        written = self._written_through.setdefault(key, {})
        metrics = [m for m in self._pending.pop(key, []) if m.step > written.get(m.key, -1)]
        run_id = self._run_id(trial)
        for start in range(0, len(metrics), 900):  # MLflow caps a batch at 1000 metrics
            self.client.log_batch(run_id, metrics=metrics[start : start + 900])
        for metric in metrics:
            written[metric.key] = max(metric.step, written.get(metric.key, -1))

    def _drop_pending(self, trial) -> None:
        """The trial restarts from its last checkpoint: its results since then will come again."""
        self._pending.pop(trial.config["ftcl_trial"], None)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self._write_pending(trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write_pending(trial)
        self.client.set_terminated(self._run_id(trial), status="FINISHED")
        self._ended.add(trial.config["ftcl_trial"])

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._drop_pending(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._drop_pending(trial)  # `--resume` restarts it from its last checkpoint
        self.client.set_terminated(self._run_id(trial), status="FAILED")
        self._ended.add(trial.config["ftcl_trial"])

    def on_experiment_end(self, trials, **info):
        """Runs of trials stopped before their end (Ctrl-C, a lost driver) are marked KILLED, not
        left RUNNING; `--resume` sets them RUNNING again."""
        for trial in trials:
            key = trial.config.get("ftcl_trial")
            if key in self._run_ids and key not in self._ended:
                self._drop_pending(trial)
                self.client.set_terminated(self._run_ids[key], status="KILLED")


class ProgressPrinter(Callback):
    """Prints `steps done / budget`, throughput and ETA over all trials of a stage.

    The rate is taken over the last `window_s` seconds (all of the run while it is shorter): a
    run's pace changes as it goes (SAC's first 5k steps per trial sample without updates), and a
    cumulative average would carry its start into the ETA for the rest of the run."""

    def __init__(self, stage: str, num_trials: int, steps_per_trial: int, unit: str = "env steps",
                 every_s: float = 15.0, window_s: float = 300.0):
        self.stage = stage
        self.num_trials = num_trials
        self.steps_per_trial = steps_per_trial
        self.unit = unit
        self.every_s = every_s
        self.window_s = window_s
        self._steps: dict[str, int] = {}
        self._done: set[str] = set()
        self._start: float | None = None
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        """(time, steps done) at each printed line and the start, the last `window_s` seconds of them."""
        self._last_print = 0.0

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_steps={}, _done=set(), _start=None, _samples=collections.deque(), _last_print=0.0)
        return state

    def __setstate__(self, state: dict) -> None:  # also an experiment state pickled by an older ftcl
        state.pop("_start_steps", None)
        self.__dict__.update({"window_s": 300.0, "_samples": collections.deque(), **state})

    def rate(self, now: float, done: int) -> float:
        """Steps per second over the window ending now (module doc), 0 before two samples."""
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()  # keep one sample at or before the window's start
        then, before = self._samples[0]
        return (done - before) / (now - then) if now > then else 0.0

    def _total(self) -> int:
        return sum(min(s, self.steps_per_trial) for s in self._steps.values())

    def _count_earlier_work(self, trials) -> None:
        """Trials that finished, or ran for a while, before a `--resume`: Tune reports no result for
        a finished trial again, so without this a resumed grid would show them as not started."""
        for other in trials:
            if other.status == "TERMINATED":
                self._done.add(other.trial_id)
                self._steps[other.trial_id] = self.steps_per_trial
            elif other.trial_id not in self._steps and any(key in (other.last_result or {}) for key in STEP_KEYS):
                self._steps[other.trial_id] = step_of(other.last_result)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._steps[trial.trial_id] = step_of(result)
        if self._start is None:
            self._count_earlier_work(trials)
            self._start = time.time()
            self._samples.append((self._start, self._total()))
        if time.time() - self._last_print >= self.every_s:
            self.print_line()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._done.add(trial.trial_id)
        self._steps[trial.trial_id] = self.steps_per_trial
        self.print_line()

    def print_line(self) -> None:
        self._last_print = time.time()
        budget = self.num_trials * self.steps_per_trial
        done = self._total()
        rate = self.rate(time.time(), done)
        eta = (budget - done) / rate if rate > 0 else float("inf")
        eta_text = "?" if math.isinf(eta) else f"{int(eta // 60)}m{int(eta % 60):02d}s"
        print(
            f"[ftcl] {self.stage}: {len(self._done)}/{self.num_trials} trials done | "
            f"{self.unit} {done:,}/{budget:,} ({100 * done / budget:.0f}%) | "
            f"{rate:,.0f}/s | ETA {eta_text}",
            file=sys.stderr,
            flush=True,
        )
