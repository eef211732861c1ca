"""The driver at scale (issue 14, item 5): one `ftcl run` of N tiny trials (the analytic two-state
MDP, one seed each) on a local multi-node cluster (a head with no CPUs and two one-CPU worker
nodes, `tests/integration/local_cluster.py`), logging to a real MLflow tracking server. While it
runs, the driver's resident memory is sampled every second and every finished trial is stamped
(from ftcl's progress lines), so the table shows whether the driver's memory and its per-trial
cost (Tune's bookkeeping and the MLflow callback) grow with the number of trials done. Then
`ftcl report` over all N runs is timed. Not part of CI; the numbers go to cluster/README.md.

    python benchmarks/driver_scale.py --trials 200 --out results/driver_scale.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))

from local_cluster import LocalCluster, TrackingServer  # noqa: E402

DONE = re.compile(r"\[ftcl\] finetune: (\d+)/(\d+) trials done")


def rss_mib(pid: int) -> float | None:
    """A process's resident memory (Linux /proc), None once it has ended."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def spec_for(trials: int) -> dict:
    """The shipped two-state toy, coverage-gap variant only, 300 gradient steps, N seeds."""
    spec = yaml.safe_load((REPO / "tune_configs/toys/two_state_mdp.yaml").read_text())
    spec.pop("grid")
    spec.update(name="driver_scale", seeds=list(range(trials)), budget={"env_steps": 300})
    return spec


def quarters(stamps: list[float], start: float) -> list[dict]:
    """Trials per minute in each quarter of the trials, by the time each finished."""
    rows, size = [], max(1, len(stamps) // 4)
    for first in range(0, len(stamps), size):
        chunk = stamps[first:first + size]
        before = stamps[first - 1] if first else start
        rows.append({"trials": f"{first + 1}-{first + len(chunk)}",
                     "trials_per_min": round(60 * len(chunk) / max(chunk[-1] - before, 1e-9), 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ftcl_scale_"))
    cluster, tracking = LocalCluster(folder / "cluster"), TrackingServer(folder / "mlflow")
    try:
        spec = folder / "driver_scale.yaml"
        spec.write_text(yaml.safe_dump(spec_for(args.trials)))
        env = {**cluster.env, "FTCL_HOME": str(folder / "home"), "MLFLOW_TRACKING_URI": tracking.uri}
        start = time.time()
        driver = subprocess.Popen([sys.executable, "-m", "ftcl.cli", "run", str(spec), "--address", cluster.address],
                                  cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        finished: list[float] = []
        log: list[str] = []

        def read() -> None:
            for line in driver.stderr:
                log.append(line)
                match = DONE.search(line)
                while match and len(finished) < int(match[1]):
                    finished.append(time.time())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        rss: list[tuple[float, float, int]] = []  # (seconds, MiB, trials done)
        while driver.poll() is None:
            if (mib := rss_mib(driver.pid)) is not None:
                rss.append((time.time() - start, mib, len(finished)))
            time.sleep(1)
        reader.join(timeout=30)
        elapsed = time.time() - start
        if driver.returncode != 0:
            raise SystemExit(f"ftcl run failed ({driver.returncode}):\n{''.join(log[-40:])}")
        started = time.time()
        report = subprocess.run([sys.executable, "-m", "ftcl.cli", "report", "driver_scale", "--tracking-uri",
                                 tracking.uri, "--layout", "two_state_mdp", "--out", str(folder / "report")],
                                cwd=REPO, env=env, capture_output=True, text=True)
        report_s = time.time() - started
        by_quarter = [max((mib for _, mib, done in rss if done <= int(q["trials"].split("-")[1])), default=0.0)
                      for q in quarters(finished, start)]
        result = {
            "trials": args.trials, "cluster": "head (0 CPUs) + 2 one-CPU worker nodes, one machine",
            "machine": f"{os.cpu_count()} cores", "load_at_end_1_5_15_min": os.getloadavg(),
            "run_s": round(elapsed, 1), "trials_per_min": round(60 * args.trials / elapsed, 1),
            "per_quarter": [{**q, "driver_peak_rss_mib": round(peak, 1)}
                            for q, peak in zip(quarters(finished, start), by_quarter)],
            "driver_peak_rss_mib": round(max(mib for _, mib, _ in rss), 1),
            "report_s": round(report_s, 1), "report_ok": report.returncode == 0,
        }
        print(json.dumps(result, indent=2))
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        tracking.stop()
        cluster.stop()


if __name__ == "__main__":
    main()
