"""Two source trees of ftcl, timed interleaved: RetentionSAC and RetentionPPO env steps/s per method.

For refactors and RLlib upgrades: does the new tree run as fast as the old one? Each round times
every (algorithm, method) case once per tree, in a fresh process with that tree first on
PYTHONPATH, and alternates which tree goes first, so drifting machine load hits both sides
alike (use an even number of rounds: on the 2-core VM the second process of a pair measured up to
~12 % slower, whichever tree it ran); the 1-minute load is recorded with every measurement. SAC: RoboticSequence[push-wall-v3],
the paper's 4×256 MLPs, batch 128, 50 env steps then 50 gradient steps; PPO: CartPole-v1, 2×64,
2000 steps per iteration, minibatch 128, 4 epochs. Methods start from a random-weight π* with
2048 transitions of data. Works for trees before and after the retention restructuring (it
looks the moved names up in both places).

    python benchmarks/compare_trees.py --before /path/to/old/checkout --after . --rounds 4
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ("sac:finetune", "sac:bc", "ppo:finetune", "ppo:bc")
DATA_ROWS = 2048
METHODS = {"finetune": {"name": "finetune"}, "l2": {"name": "l2", "coeff": 1.0},
           "bc": {"name": "bc", "coeff": 1.0, "buffer_size": DATA_ROWS, "batch_size": 128}}


def _config(algorithm: str):
    """The tree's RLlib config for the case (its own import paths)."""
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    if algorithm == "ppo":
        from ftcl.algorithms.ppo import RetentionPPOConfig

        return (RetentionPPOConfig().environment("CartPole-v1").env_runners(num_env_runners=0).learners(num_learners=0)
                .rl_module(model_config={"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh", "vf_share_layers": False})
                .training(train_batch_size_per_learner=2000, minibatch_size=128, num_epochs=4)
                .reporting(min_time_s_per_iteration=0).debugging(seed=0, log_level="ERROR"))
    from ftcl.algorithms.sac import RetentionSACConfig
    from ftcl.models.mlp_sac import MLPSACTorchRLModule

    try:
        from ftcl.trial_config import env_id, register_envs
    except ImportError:  # trees before the runner split
        from ftcl.runner import env_id, register_envs
    register_envs()
    config = (RetentionSACConfig()
              .environment(env_id("robotic_sequence"), env_config={"stages": ["push-wall-v3"], "seed": 0})
              .env_runners(num_env_runners=0, rollout_fragment_length=50).learners(num_learners=0)
              .rl_module(rl_module_spec=RLModuleSpec(module_class=MLPSACTorchRLModule, model_config={"fcnet_hiddens": [256] * 4}))
              .training(train_batch_size_per_learner=128, num_steps_sampled_before_learning_starts=256,
                        replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": 100_000}, training_intensity=128)
              .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=50)
              .debugging(seed=0, log_level="ERROR"))
    throughput = getattr(config, "throughput", None)  # trees where flat replay was opt-in
    if throughput is not None and "flat_replay" in throughput.__code__.co_varnames:
        config = throughput(flat_replay=True)
    return config


def measure(algorithm: str, method: str, windows: int = 3) -> dict:
    """Env steps/s of one case on the ftcl that Python imports (median of `windows` windows)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import gymnasium as gym
    import ray
    import torch

    import ftcl
    from ftcl.pretrain.data import collect_policy_data

    try:
        from ftcl.data.retention_data import save_retention_data
    except ImportError:  # trees before ftcl/data
        from ftcl.pretrain.data import save_retention_data
    torch.set_num_threads(1)
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    config = _config(algorithm)
    with tempfile.TemporaryDirectory() as scratch:
        if algorithm == "sac":
            from ftcl.envs.registry import ENVS

            env = ENVS["robotic_sequence"].make({"stages": ["push-wall-v3"], "seed": 0})
        else:
            env = gym.make("CartPole-v1")
        spec = config.get_rl_module_spec(env=env)
        spec.observation_space, spec.action_space = env.observation_space, env.action_space
        module = spec.build()
        try:  # trees since π* became the whole agent refuse a bare RLModule checkpoint
            from ftcl.algorithms.pi_star import save_pi_star
        except ImportError:
            module.save_to_path(Path(scratch) / "module")
        else:
            save_pi_star(module, Path(scratch) / "module", log_alpha=-1.6 if algorithm == "sac" else None)
        data = save_retention_data(Path(scratch) / "data.npz", collect_policy_data(module, env, DATA_ROWS, seed=1))
        algo = config.retention(method=METHODS[method], pretrained_module_path=Path(scratch) / "module",
                                retention_data_path=data).build_algo()
        torch.set_num_threads(1)

        def sampled() -> int:
            return int(algo.metrics.peek(("env_runners", "num_env_steps_sampled_lifetime"), default=0))

        window = 300 if algorithm == "sac" else 2000
        while sampled() < (306 if algorithm == "sac" else 2000):  # warm-up: learning has started
            algo.train()
        rates = []
        for _ in range(windows):
            start_steps, start = sampled(), time.perf_counter()
            while sampled() < start_steps + window:
                algo.train()
            rates.append((sampled() - start_steps) / (time.perf_counter() - start))
        algo.stop()
    ray.shutdown()
    return {"tree": str(Path(ftcl.__file__).resolve().parents[1]), "rates": rates, "load": os.getloadavg()[0]}


def compare(before: Path, after: Path, rounds: int, cases: list[str]) -> list[dict]:
    """Interleaved measurements (see the module docstring); prints one line each and a summary."""
    results = []
    for round_index in range(rounds):
        for case in cases:
            trees = (before, after) if round_index % 2 == 0 else (after, before)
            for tree in trees:
                algorithm, method = case.split(":")
                output = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--measure", algorithm, method],
                    cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True, check=True,
                ).stdout.strip().splitlines()[-1]
                row = {"round": round_index + 1, "case": case, "side": "before" if tree == before else "after", **json.loads(output)}
                results.append(row)
                print(f"round {row['round']} {case:<13} {row['side']:<6} {statistics.median(row['rates']):8.1f} env steps/s "
                      f"(load {row['load']:.2f})", flush=True)
    print("\ncase           after/before per round        median")
    for case in cases:
        ratios = []
        for round_index in range(1, rounds + 1):
            side = {r["side"]: statistics.median(r["rates"]) for r in results if r["case"] == case and r["round"] == round_index}
            ratios.append(side["after"] / side["before"])
        print(f"{case:<14} {', '.join(f'{r:.2f}' for r in ratios):<30} {statistics.median(ratios):.2f}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="checkout of the old tree (its ftcl/ is imported)")
    parser.add_argument("--after", type=Path, default=Path("."), help="checkout of the new tree (default: here)")
    parser.add_argument("--rounds", type=int, default=4, help="even, so each tree goes first equally often")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated ALGORITHM:METHOD (default {','.join(CASES)})")
    parser.add_argument("--out", type=Path, default=None, help="JSON lines of every measurement")
    parser.add_argument("--measure", nargs=2, metavar=("ALGORITHM", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return 0
    cases = args.cases.split(",")
    bad = [c for c in cases if c.split(":")[0] not in ("sac", "ppo") or c.split(":")[-1] not in METHODS]
    if args.before is None or not (args.before / "ftcl").is_dir() or not (args.after / "ftcl").is_dir() or bad:
        print(f"compare_trees: error: --before and --after must be checkouts with ftcl/; cases from "
              f"sac|ppo : {'|'.join(METHODS)} (bad: {bad})", file=sys.stderr)
        return 2
    results = compare(args.before.resolve(), args.after.resolve(), args.rounds, cases)
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
