"""What every benchmark shares: the sizes, a table row, timing medians, tables, the CSV, Ray."""
from __future__ import annotations

import contextlib
import csv
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

SAC_HIDDENS = [256, 256, 256, 256]
SAC_BATCH = 128
SAC_STAGE = "push-wall-v3"
SAC_ENV_NAME = f"RoboticSequence[{SAC_STAGE}]"
ROBOTIC_SEQUENCE_ID = "ftcl_bench/robotic_sequence"
PPO_HIDDENS = [64, 64]
PPO_BATCH, PPO_MINIBATCH, PPO_EPOCHS = 4000, 128, 10
SAC_METHODS = ["finetune", "l2", "ewc", "bc", "ks", "em"]
PPO_METHODS = ["finetune", "l2", "ewc", "bc", "ks"]


def load_average() -> float:
    """1-minute load average (what `uptime` shows first)."""
    return round(os.getloadavg()[0], 2)


@dataclass
class Row:
    """One measured line of a table (and of the CSV)."""

    part: str
    system: str
    env: str
    method: str = "-"
    setting: str = "-"
    env_steps_per_s: float | None = None
    updates_per_s: float | None = None
    ms_per_update: float | None = None
    repeats: int = 0
    load_1min: float = field(default_factory=load_average)
    note: str = ""


def median_rate(rates: list[float]) -> float:
    """Median of the timed windows' rates."""
    return float(statistics.median(rates))


def median_pair(results: list[tuple[float, float]]) -> tuple[float, float]:
    """Medians of (env steps/s, updates/s) windows, each column on its own."""
    return median_rate([r[0] for r in results]), median_rate([r[1] for r in results])


def overhead_note(value_ms: float, base_ms: float | None) -> str:
    """'+x.y % per update vs finetune' (empty without a finetune baseline)."""
    return "" if base_ms is None else f"+{100 * (value_ms / base_ms - 1):.1f} % per update vs finetune"


def interleaved_update_ms(algos: dict[str, Any], update: Callable[[Any], int], repeats: int) -> dict[str, float]:
    """Median wall ms per gradient step of `update(algo)` (which returns its step count), per name.

    Everything is built up front and timed round-robin, window by window, so a change in machine
    load hits every entry alike. At least 3 windows, after one warm-up call each.
    """
    times: dict[str, list[float]] = {name: [] for name in algos}
    for algo in algos.values():
        update(algo)
    for _ in range(max(repeats, 3)):
        for name, algo in algos.items():
            start = time.perf_counter()
            count = update(algo)
            times[name].append(1000 * (time.perf_counter() - start) / count)
    return {name: float(statistics.median(values)) for name, values in times.items()}


def fmt(value: float | None, digits: int = 1) -> str:
    """A table cell: thousands separators, '-' for no value."""
    return "-" if value is None else f"{value:,.{digits}f}"


def print_table(title: str, rows: list[Row], extra: dict[str, str] | None = None) -> None:
    """Print `rows` as a Markdown table under `title`, then the `extra` lines."""
    print(f"\n## {title}")
    header = ["system", "env", "method", "setting", "env steps/s", "updates/s", "wall ms/update", "load", "note"]
    lines = [header, ["---"] * len(header)]
    for row in rows:
        lines.append([
            row.system, row.env, row.method, row.setting, fmt(row.env_steps_per_s), fmt(row.updates_per_s),
            fmt(row.ms_per_update, 2), f"{row.load_1min:.2f}", row.note,
        ])
    for line in lines:
        print("| " + " | ".join(line) + " |")
    for key, value in (extra or {}).items():
        print(f"{key}: {value}")
    sys.stdout.flush()


def machine_info(argv: list[str]) -> dict[str, str]:
    """CPU count, load, torch threads, package versions and the exact command."""
    import importlib.metadata as metadata

    import torch

    versions = {}
    for package in ("torch", "ray", "gymnasium", "stable_baselines3", "metaworld", "mujoco", "ale_py", "nle", "numpy"):
        try:
            versions[package] = metadata.version(package.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "command": "ftcl bench " + " ".join(shlex.quote(a) for a in argv),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}",
        "load (1/5/15 min)": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "torch threads": str(torch.get_num_threads()),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }


def write_csv(path: Path, rows: list[Row], info: dict[str, str]) -> None:
    """All rows, one per line: the `Row` fields, then the command that produced them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(Row.__dataclass_fields__)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names + ["command"])
        for row in rows:
            writer.writerow([getattr(row, name) for name in names] + [info["command"]])


def robotic_sequence_env(stage: str = SAC_STAGE) -> Any:
    """A one-stage RoboticSequence env (Meta-World v3), seed 0."""
    from ftcl.envs.robotic_sequence import Options, make_env

    return make_env(Options(stages=[stage], seed=0).model_dump())


def register_robotic_sequence() -> str:
    """Register RoboticSequence with Ray Tune (env_config = its options); the registered name."""
    from ray.tune import register_env

    def create(env_config: dict[str, Any]) -> Any:
        from ftcl.envs.robotic_sequence import Options, make_env

        return make_env(Options(**env_config).model_dump())

    register_env(ROBOTIC_SEQUENCE_ID, create)
    return ROBOTIC_SEQUENCE_ID


@contextlib.contextmanager
def ray_session(num_cpus: int | None = None) -> Iterator[None]:
    """A local Ray instance for the block (kept if one is already running), no dashboard. `num_cpus`:
    the CPUs Ray may hand out (default: the machine's), more where a config asks for more actors
    than there are cores (the OS then shares the cores among them, as it does for any peer)."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        yield
    finally:
        if started:
            ray.shutdown()
