"""APPO throughput on NetHack: ftcl's RetentionAPPO with the `tty_lstm` model against Sample Factory
2.1.1, the framework the paper's authors train it with, at the same network widths, envs and batch.

ftcl runs in this process as a trial would: its config is built by `ftcl.trial_config` from a spec
on the `appo_nethack` preset with the benchmark's sizes (W env runners × E envs, rollout 32,
`train_batch_size_per_learner` B, one epoch, one minibatch; the learner in its own actor, as
RLlib's APPO puts it). Sample Factory runs in its own venv (`benchmarks/sample_factory_setup.sh`:
it needs gymnasium < 1 and numpy < 2) as a subprocess, `benchmarks/sample_factory_nethack.py`,
with W rollout workers × E envs, rollout = recurrence = 32, batch B, ftcl's encoder and an LSTM
core of the same size; each of its windows is a fresh run (start-up and a warm-up not timed).

Windows alternate, Sample Factory first (SF, ftcl, SF, ftcl, ...), each `window_s` seconds, so a
change in load hits both; between them ftcl's learner is let finish what it had queued, so neither
side's leftover work runs in the other's window. Both count env steps (= agent steps; no frame
skip) that the learner trained on, over wall time: Sample Factory's own fps counts the same and
is shown beside it. Rows are medians over windows and record the 1-minute load average.

Where the time goes, per iteration (one learner update of B env steps), seconds of each part summed
over the processes that do it: env steps, policy forward passes for sampling, and the learner's
update. ftcl: RLlib's timers (EnvRunners' env-step and RLModule-inference timers, the learner
thread's update timer and its wait for data), medians over the window's iterations; Sample
Factory: its components' profiles over the whole run (warm-up included).
"""
from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Row, load_average, ray_session

ENV_NAME = "NetHack (nethack env, 121 actions)"
CPU_WIDTHS = {"h_dim": 128, "msg_hdim": 32, "blstats_hdim": 64, "fc_after_cnn_hdim": 64, "char_edim": 8, "color_edim": 8}
"""Default `tty_lstm` widths for a CPU benchmark (the paper's π*: h_dim 1,738, ≈ 30M parameters)."""
REPO = Path(__file__).resolve().parents[1]
SF_SCRIPT = Path(__file__).with_name("sample_factory_nethack.py")
SETUP_SCRIPT = "benchmarks/sample_factory_setup.sh"
SF_START_S = 300.0
"""Time allowed for a Sample Factory run's start-up and shutdown besides its warm-up and window:
a run whose component died hangs rather than exits, so the harness ends it."""


def parse_widths(text: str | None) -> dict[str, int]:
    """`h_dim=128,msg_hdim=32` over the CPU defaults; ValueError names a bad entry."""
    import dataclasses

    from ftcl.models.tty_lstm import TtyNetConfig

    # the integer sizes of the network (the action count is the env's, the previous action always used)
    names = sorted(f.name for f in dataclasses.fields(TtyNetConfig))
    names = [name for name in names if name not in ("num_actions", "use_prev_action", "normalize_returns")]
    widths = dict(CPU_WIDTHS)
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in names or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"--widths entry {item!r}: expected NAME=N (N >= 1) with NAME one of {', '.join(names)}")
        widths[key] = int(value)
    return widths


def check_sf_venv(venv: Path) -> str | None:
    """An error message if `venv` is not a Sample Factory venv made by the set-up script, else None."""
    python = venv / "bin" / "python"
    hint = f"create it with: bash {SETUP_SCRIPT} {venv}"
    if not python.is_file():
        return f"no Sample Factory venv at {venv} (no bin/python); {hint}"
    check = subprocess.run([str(python), "-c", "import sample_factory, nle, gymnasium, pydantic, torch"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        return f"the venv at {venv} lacks what Sample Factory's side needs ({last}); {hint}"
    return None


# ---- ftcl ------------------------------------------------------------------------------------------
def ftcl_config(workers: int, envs: int, batch: int, widths: dict[str, int], seed: int = 0):
    """ftcl's RetentionAPPO config for the benchmark's sizes, built as `ftcl run` builds a trial's, and
    the CPUs it asks Ray for."""
    import yaml

    from ftcl.plan import plan_trials, trial_spec
    from ftcl.spec import load_spec
    from ftcl.trial_config import build_algorithm_config, trial_resources

    raw = {"name": "bench_nethack", "presets": ["appo_nethack"], "env": {"name": "nethack"},
           "algorithm": {"model_options": {**widths, "max_seq_len": 32}, "num_env_runners": workers,
                         "num_envs_per_env_runner": envs, "rollout_fragment_length": 32,
                         "options": {"train_batch_size_per_learner": batch}},
           "methods": [{"name": "scratch"}], "seeds": [seed], "budget": {"env_steps": 10**12}}
    with tempfile.TemporaryDirectory(prefix="ftcl_bench_") as folder:
        path = Path(folder) / "bench_nethack.yaml"
        path.write_text(yaml.safe_dump(raw))
        spec = load_spec(path)
    plan = plan_trials(spec, "finetune")[0]
    config = build_algorithm_config(trial_spec(spec, plan), plan, None, None)
    return config, int(math.ceil(trial_resources(spec, plan).required_resources.get("CPU", 1)))


def _finite(values: list[float]) -> float:
    kept = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(statistics.median(kept)) if kept else float("nan")


class FtclSide:
    """A built RetentionAPPO, timed window by window with `train()` calls (each as long as RLlib's
    `min_time_s_per_iteration`, ftcl's default)."""

    def __init__(self, config, batch: int, envs: int):
        from ftcl.trial_config import register_envs

        register_envs()  # the `ftcl/nethack` name the config uses, as a trial registers it
        self.algo = config.build_algo()
        self.batch, self.envs = batch, envs
        self.result: dict[str, Any] = {}

    def counters(self) -> tuple[float, float]:
        """(env steps sampled, env steps trained) so far, from the last result."""
        runners = self.result.get("env_runners", {})
        learners = self.result.get("learners", {}).get("__all_modules__", {})
        return float(runners.get("num_env_steps_sampled_lifetime", 0)), float(learners.get("num_env_steps_trained_lifetime", 0))

    def warm_up(self, seconds: float) -> None:
        """Train until the learner has trained on data and `seconds` more have passed."""
        while self.counters()[1] == 0:
            self.result = self.algo.train()
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            self.result = self.algo.train()

    def window(self, seconds: float) -> dict[str, Any]:
        """Rates over whole `train()` calls lasting at least `seconds`, and the per-iteration split."""
        sampled0, trained0 = self.counters()
        results, start = [], time.perf_counter()
        while time.perf_counter() - start < seconds:
            self.result = self.algo.train()
            results.append(self.result)
        elapsed = time.perf_counter() - start
        load = load_average()
        sampled1, trained1 = self.counters()

        def timer(part: str, key: str) -> float:
            values = []
            for result in results:
                node = result.get(part, {})
                for name in key.split("/"):
                    node = node.get(name, {}) if isinstance(node, dict) else {}
                values.append(node if isinstance(node, (int, float)) else float("nan"))
            return _finite(values)

        calls = self.batch / self.envs  # vector-env steps (and forward passes) per B env steps, all runners together
        split = {
            "env_step": timer("env_runners", "env_step_timer") * calls,
            "inference_forward": timer("env_runners", "rlmodule_inference_timer") * calls,
            "sample_call": timer("env_runners", "sample") * self.batch / (self.envs * 32),
            "learner_train": timer("learners", "__all_modules__/learner_thread_update_timer"),
            "learner_waiting": timer("learners", "__all_modules__/learner_thread_in_queue_wait_timer"),
        }
        self.drain()
        return {"trained_per_s": (trained1 - trained0) / elapsed, "sampled_per_s": (sampled1 - sampled0) / elapsed,
                "updates_per_s": (trained1 - trained0) / self.batch / elapsed, "per_iteration_s": split, "load": load}

    def drain(self, timeout_s: float = 300.0) -> None:
        """Wait until the learner has trained on every batch it had queued (APPO's learner works on
        its queue in a thread of its own, also after `train()` returns)."""
        def unfinished(learner) -> int:
            queue = getattr(learner, "_learner_thread_in_queue", None)
            return int(getattr(queue, "unfinished_tasks", 0))

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sum(r.get() for r in self.algo.learner_group.foreach_learner(unfinished) if r.ok) == 0:
                return
            time.sleep(0.5)

    def stop(self) -> None:
        self.algo.stop()


# ---- Sample Factory --------------------------------------------------------------------------------
def sf_window(venv: Path, workers: int, envs: int, batch: int, widths: dict[str, int], warmup_s: float,
              window_s: float, scratch: Path, index: int) -> dict[str, Any]:
    """One Sample Factory run (its own process group), its SF_RESULT; RuntimeError with its log's tail."""
    from benchmarks.sample_factory_nethack import RESULT_PREFIX

    log_path = scratch / f"sample_factory_{index}.log"
    command = [str(venv / "bin" / "python"), str(SF_SCRIPT), "--workers", str(workers), "--envs-per-worker", str(envs),
               "--batch", str(batch), "--widths", json.dumps(widths), "--warmup-s", str(warmup_s),
               "--window-s", str(window_s), "--train-dir", str(scratch / f"sf_train_{index}")]
    # only ftcl's Ray-free modules are imported there; one torch thread per process, as on ftcl's side
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=scratch,
                                   start_new_session=True)
        try:
            returncode = process.wait(timeout=SF_START_S + warmup_s + window_s)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            # Sample Factory's worker processes share the new session's process group: end them all
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
    load = load_average()
    lines = log_path.read_text(errors="replace").splitlines()
    results = [line[len(RESULT_PREFIX):] for line in lines if line.startswith(RESULT_PREFIX)]
    if returncode != 0 or not results:
        why = "timed out" if returncode is None else f"exited with {returncode}"
        tail = "\n".join(lines[-25:])
        raise RuntimeError(f"Sample Factory run {index} {why}; the end of {log_path}:\n{tail}")
    return {**json.loads(results[-1]), "load": load}


# ---- the part --------------------------------------------------------------------------------------
def nethack_rows(venv: Path, workers: int, envs: int, batch: int, widths: dict[str, int], repeats: int,
                 window_s: float, warmup_s: float) -> tuple[list[Row], dict[str, str]]:
    from ftcl.models.tty_lstm import TtyLSTMNet, parameter_count

    from benchmarks.sample_factory_nethack import net_config

    parameters = parameter_count(TtyLSTMNet(net_config(widths)))
    config, cpus = ftcl_config(workers, envs, batch, widths)
    windows: dict[str, list[dict[str, Any]]] = {"sf": [], "ftcl": []}
    with ray_session(num_cpus=max(os.cpu_count() or 2, cpus)), \
            tempfile.TemporaryDirectory(prefix="ftcl_bench_sf_") as scratch:
        ftcl = FtclSide(config, batch, envs)
        try:
            ftcl.warm_up(warmup_s)
            ftcl.drain()
            for index in range(repeats):
                windows["sf"].append(sf_window(venv, workers, envs, batch, widths, warmup_s, window_s, Path(scratch), index))
                print(f"  window {index + 1}/{repeats}: Sample Factory {windows['sf'][-1]['trained_per_s']:.1f} env steps/s",
                      file=sys.stderr, flush=True)
                windows["ftcl"].append(ftcl.window(window_s))
                print(f"  window {index + 1}/{repeats}: ftcl {windows['ftcl'][-1]['trained_per_s']:.1f} env steps/s",
                      file=sys.stderr, flush=True)
        finally:
            ftcl.stop()

    def median(system: str, key: str) -> float:
        return _finite([w[key] for w in windows[system]])

    def split(system: str) -> dict[str, float]:
        return {key: _finite([w["per_iteration_s"].get(key, float("nan")) for w in windows[system]])
                for key in windows[system][0]["per_iteration_s"]}

    setting = f"{workers} workers × {envs} envs, rollout 32, batch {batch}, LSTM {widths['h_dim']}"
    rows = []
    sf_rate, sf_split = median("sf", "trained_per_s"), split("sf")
    sf_note = (f"per iteration: env {sf_split['env_step']:.2f} s, inference {sf_split['inference_forward']:.2f} s, "
               f"learner {sf_split['learner_train']:.2f} s (whole run); sampled {median('sf', 'sampled_per_s'):,.0f}/s; "
               f"its own fps (10 s) {median('sf', 'sf_fps_10s'):,.0f}")
    sf_updates = median("sf", "updates_per_s")
    rows.append(Row("nethack", "Sample Factory 2.1.1 APPO", ENV_NAME, "-", setting, sf_rate, sf_updates,
                    1000 / sf_updates if sf_updates else None, repeats, round(median("sf", "load"), 2), sf_note))
    rate, ftcl_split = median("ftcl", "trained_per_s"), split("ftcl")
    note = (f"per iteration: env {ftcl_split['env_step']:.2f} s, inference {ftcl_split['inference_forward']:.2f} s "
            f"(sample() {ftcl_split['sample_call']:.2f} s), learner {ftcl_split['learner_train']:.2f} s "
            f"(waiting for data {ftcl_split['learner_waiting']:.2f} s); sampled {median('ftcl', 'sampled_per_s'):,.0f}/s; "
            f"{rate / sf_rate:.2f}× Sample Factory (target ≥ 0.8×)")
    updates = median("ftcl", "updates_per_s")
    rows.append(Row("nethack", "ftcl RetentionAPPO (RLlib)", ENV_NAME, "scratch", setting, rate, updates,
                    1000 / updates if updates else None, repeats, round(median("ftcl", "load"), 2), note))
    extra = {
        "network": f"tty_lstm {json.dumps(widths)}, {parameters:,} parameters on both sides "
                   f"(Sample Factory: ftcl's encoder + its own LSTM core and heads, counted equal)",
        "rates": f"env steps trained on per second (agent steps, no frame skip), median of {repeats} "
                 f"{window_s:.0f}-s windows, interleaved SF/ftcl; each SF window is a fresh run after a {warmup_s:.0f}-s warm-up",
        "per iteration": f"seconds per learner update of {batch} env steps, summed over the processes doing each part",
    }
    return rows, extra
