"""Peak memory of the process tree while Ray Tune runs a 2-trial RetentionSAC grid."""
from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import SAC_ENV_NAME, Row, ray_session, robotic_sequence_env


def process_tree_rss_mb(root_pid: int) -> float:
    """Summed RSS (MiB) of `root_pid` and all its descendants, read from /proc (over-counts shared pages)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            parent, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
        rss[int(entry)] = pages
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_rows(steps: int, data_rows: int) -> tuple[list[Row], dict[str, str]]:
    """Peak process-tree RSS, sampled every 0.5 s, while Tune runs 2 RetentionSAC (finetune) trials."""
    from ray import tune

    from benchmarks.ftcl_rllib import make_pretrained_artifacts, sac_config

    peak = {"mb": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak["mb"] = max(peak["mb"], process_tree_rss_mb(os.getpid()))
            stop.wait(0.5)

    with ray_session(), tempfile.TemporaryDirectory(prefix="ftcl_bench_") as scratch:
        module_dir, _ = make_pretrained_artifacts(sac_config(1), robotic_sequence_env, Path(scratch), data_rows)
        config = sac_config(50).retention(method={"name": "finetune"}, pretrained_module_path=module_dir)
        config = config.debugging(seed=tune.grid_search([0, 1]))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        tuner = tune.Tuner(
            config.algo_class, param_space=config,
            run_config=tune.RunConfig(storage_path=str(Path(scratch) / "ray_results"), name="bench_memory",
                                      stop={"env_runners/num_env_steps_sampled_lifetime": steps}, verbose=0),
        )
        results = tuner.fit()
        elapsed = time.perf_counter() - start
        stop.set()
        sampler.join()
        errors = len(results.errors)
    row = Row("memory", "Ray Tune grid", SAC_ENV_NAME, "finetune", "2 trials × RetentionSAC (default replay), 0 env runners",
              note=f"peak process-tree RSS {peak['mb']:,.0f} MiB; {elapsed:.0f} s; {errors} trial errors; {steps} env steps/trial")
    return [row], {"peak RSS (MiB)": f"{peak['mb']:,.0f} (sum over the driver, Ray system processes and trial workers; "
                                     "shared pages counted once per process)"}
