"""One timed window of Sample Factory 2.1.1 (APPO) on ftcl's `nethack` env with ftcl's tty_lstm network.

Runs in Sample Factory's own venv (`benchmarks/sample_factory_setup.sh`), started by
`benchmarks.nethack_rates` with PYTHONPATH at the repository: it imports only the Ray-free parts of
ftcl (`ftcl.envs.nethack`, `ftcl.models.tty_lstm`), never Ray or RLlib.

The network is ftcl's: `TtyLSTMNet.encode` (message, status, map, crop, previous action → FC
h_dim) is Sample Factory's encoder, and Sample Factory's own LSTM core (rnn_size = h_dim, one
layer) and heads (policy logits, value) follow it, so the parameters are the same tensors, one
for one, as ftcl's `TtyLSTMNet` at the same widths (checked below, the count is printed).

Timing: Sample Factory starts its processes (runner, learner, one inference worker, N rollout
workers), trains `--warmup-s` seconds after its first learner step, then `--window-s` seconds
more; the window's rate is the env steps the learner trained on (Sample Factory's own fps counts
these) and the env steps the inference worker served, over the wall time between the learner steps
that open and close it. The last line printed is `SF_RESULT {json}` for the harness.

  python benchmarks/sample_factory_nethack.py --workers 2 --envs-per-worker 4 --batch 1024 \\
      --widths '{"h_dim": 128, "msg_hdim": 32}' --warmup-s 30 --window-s 60 --train-dir DIR
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

ENV_NAME = "ftcl_nethack"
RESULT_PREFIX = "SF_RESULT "


def net_config(widths: dict[str, Any]):
    from ftcl.models.tty_lstm import TtyNetConfig

    return TtyNetConfig(num_actions=121, **widths)


# ---- env and network, registered with Sample Factory ---------------------------------------------
# These live at module level: Sample Factory pickles its registry (these functions) into the
# processes it spawns, which import this file again to find them.
def make_nethack(full_env_name: str, cfg: Any = None, env_config: Any = None, render_mode: str | None = None):
    from ftcl.envs.nethack import NetHackEnv

    # one seed per env (Sample Factory numbers its envs env_id = worker × envs per worker + index)
    env_id = int(env_config["env_id"]) if env_config is not None else 0
    return NetHackEnv({"seed": int(cfg.seed or 0) * 10_000 + env_id})


def make_encoder(cfg: Any, obs_space: Any):
    import torch
    from sample_factory.model.encoder import Encoder

    from ftcl.models.tty_lstm import TtyLSTMNet

    class TtyEncoder(Encoder):
        """ftcl's TtyLSTMNet up to its FC (h_dim): Sample Factory adds the LSTM core and the heads."""

        def __init__(self):
            super().__init__(cfg)
            net = TtyLSTMNet(net_config(json.loads(cfg.tty_widths)))
            del net.core, net.policy, net.baseline  # Sample Factory's own core and heads replace these
            self.net = net

        def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.net.encode(obs["tty"], obs["prev_action"])

        def get_out_size(self) -> int:
            return self.net.config.h_dim

        def type_for_input_tensor(self, input_tensor_name: str) -> torch.dtype:
            # keep the terminal as bytes and the previous action as an integer, as ftcl feeds them;
            # Sample Factory would otherwise turn every observation into float32 first
            return torch.uint8 if input_tensor_name == "tty" else torch.int64

    return TtyEncoder()


def register_components() -> None:
    from sample_factory.algo.utils.context import global_model_factory
    from sample_factory.envs.env_utils import register_env

    register_env(ENV_NAME, make_nethack)
    global_model_factory().register_encoder_factory(make_encoder)


# ---- the timed window ----------------------------------------------------------------------------
def window_observer(warmup_s: float, window_s: float, record: dict[str, Any]):
    """An AlgoObserver that marks the window's first and last learner steps and then stops training."""
    from sample_factory.algo.runners.runner import AlgoObserver

    class Window(AlgoObserver):
        def __init__(self):
            self.first_step: float | None = None

        def on_training_step(self, runner, training_iteration_since_resume: int) -> None:
            now = time.monotonic()
            mark = {"time": now, "trained": int(runner.env_steps.get(0, 0)),
                    "sampled": int(runner.samples_collected[0]), "iteration": int(training_iteration_since_resume)}
            if self.first_step is None:
                self.first_step = now
            if "start" not in record:
                if now - self.first_step >= warmup_s:
                    record["start"] = mark
            elif "end" not in record and now - record["start"]["time"] >= window_s:
                record["end"] = mark
                fps, _ = runner._get_perf_stats()  # Sample Factory's own (10 s, 60 s, 5 min) fps
                record["sf_fps"] = [None if f != f else float(f) for f in fps]
                # the runner stops itself this way when train_for_env_steps is reached
                runner._stop_training()

    return Window()


def profile_totals(component_profiles: list[tuple[str, Any]], num_workers: int) -> dict[str, float]:
    """Seconds summed over the run, per part, from the profiles Sample Factory's components report
    when they stop: env steps (all rollout workers), policy forward passes (inference worker),
    learner updates. Only the first and the last rollout worker report theirs: their mean stands
    for each worker."""
    env_steps = [float(t.get("env_step", 0.0)) for name, t in component_profiles if name.startswith("RolloutWorker")]
    totals = {"env_step": num_workers * sum(env_steps) / max(len(env_steps), 1), "inference_forward": 0.0,
              "learner_train": 0.0}
    for name, timing in component_profiles:
        if name.startswith("InferenceWorker"):
            totals["inference_forward"] += float(timing.get("forward", 0.0))
        elif name.startswith("LearnerWorker"):
            totals["learner_train"] += float(timing.get("train", 0.0))
    return totals


def sf_argv(args: argparse.Namespace, widths: dict[str, Any]) -> list[str]:
    """Sample Factory's configuration: the ftcl side's sizes and APPO settings (`appo_nethack` preset)."""
    split = 2 if args.envs_per_worker % 2 == 0 else 1  # Sample Factory's double-buffered sampling needs even envs
    settings = {
        "env": ENV_NAME, "experiment": "nethack_bench", "train_dir": args.train_dir, "restart_behavior": "overwrite",
        "device": "cpu", "seed": args.seed,
        "num_workers": args.workers, "num_envs_per_worker": args.envs_per_worker, "worker_num_splits": split,
        "rollout": 32, "recurrence": 32, "batch_size": args.batch, "num_batches_per_epoch": 1, "num_epochs": 1,
        "use_rnn": True, "rnn_type": "lstm", "rnn_size": widths["h_dim"], "rnn_num_layers": 1,
        # the authors' learner settings (see the appo_nethack preset): no V-trace (Sample Factory
        # 2.1.1's learner also fails on its summaries with V-trace on), λ = 1, returns normalised,
        # rewards clipped to ±10; the cost of each is negligible next to the network's
        "with_vtrace": False, "gae_lambda": 1.0, "normalize_returns": True, "reward_clip": 10.0,
        "normalize_input": False, "gamma": 1.0, "ppo_clip_ratio": 0.1, "value_loss_coeff": 1.0, "exploration_loss_coeff": 0.001,
        "max_grad_norm": 4.0, "learning_rate": 1e-4, "policy_initialization": "torch_default",
        # no checkpoints inside the window (one is written after it, when training stops)
        "save_every_sec": 10**7, "save_best_after": 10**15, "train_for_env_steps": 10**15,
        # Sample Factory sets its processes' niceness itself (learner at this value, inference +2,
        # rollout workers +10): start from the harness's own, never above its priority
        "default_niceness": os.nice(0), "log_to_file": False, "with_wandb": False,
        "tty_widths": json.dumps(widths),
    }
    return [f"--{key}={value}" for key, value in settings.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, required=True, help="rollout worker processes")
    parser.add_argument("--envs-per-worker", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True, help="env steps per learner update (one epoch, one minibatch)")
    parser.add_argument("--widths", required=True, help="TtyNetConfig widths as JSON, e.g. {\"h_dim\": 128}")
    parser.add_argument("--warmup-s", type=float, default=30.0, help="seconds after the first learner step before the window")
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--train-dir", required=True, help="scratch folder for Sample Factory's experiment files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.workers, args.envs_per_worker, args.batch) < 1 or args.batch % 32 or args.window_s <= 0 or args.warmup_s < 0:
        parser.error("--workers, --envs-per-worker >= 1, --batch a multiple of 32, --window-s > 0, --warmup-s >= 0")
    widths = json.loads(args.widths)

    import torch
    from sample_factory.algo.utils.misc import ExperimentStatus
    from sample_factory.cfg.arguments import parse_full_cfg, parse_sf_args
    from sample_factory.train import make_runner

    from ftcl.models.tty_lstm import TtyLSTMNet, parameter_count

    torch.set_num_threads(1)
    register_components()
    sf_args = sf_argv(args, widths)
    sf_parser, _ = parse_sf_args(sf_args)
    sf_parser.add_argument("--tty_widths", type=str, required=True, help="ftcl TtyNetConfig widths (JSON)")
    cfg = parse_full_cfg(sf_parser, sf_args)

    # the same network as ftcl's, tensor for tensor: compare the parameter counts before timing anything
    import gymnasium as gym
    import numpy as np
    from sample_factory.model.actor_critic import create_actor_critic

    obs_space = gym.spaces.Dict({"tty": gym.spaces.Box(0, 255, (3, 24, 80), np.uint8),
                                 "prev_action": gym.spaces.Box(-1, 120, (), np.int64)})
    sf_params = parameter_count(create_actor_critic(cfg, obs_space, gym.spaces.Discrete(121)))
    ftcl_params = parameter_count(TtyLSTMNet(net_config(widths)))
    if sf_params != ftcl_params:
        print(f"sample_factory_nethack: Sample Factory's model has {sf_params} parameters, ftcl's {ftcl_params}", file=sys.stderr)
        return 1

    record: dict[str, Any] = {}
    cfg, runner = make_runner(cfg)
    runner.register_observer(window_observer(args.warmup_s, args.window_s, record))
    status = runner.init()
    if status == ExperimentStatus.SUCCESS:
        status = runner.run()
    if "end" not in record:
        print(f"sample_factory_nethack: training ended (status {status}) before the window closed", file=sys.stderr)
        return 1
    start, end = record["start"], record["end"]
    seconds = end["time"] - start["time"]
    iterations = max(end["iteration"], 1)
    if os.environ.get("SF_BENCH_DEBUG"):
        for name, timing in runner.component_profiles:
            print("PROFILE", name, dict(timing))
    totals = profile_totals(list(runner.component_profiles), args.workers)
    result = {
        "seconds": seconds, "parameters": sf_params,
        "trained_per_s": (end["trained"] - start["trained"]) / seconds,
        "sampled_per_s": (end["sampled"] - start["sampled"]) / seconds,
        "updates_per_s": (end["iteration"] - start["iteration"]) / seconds,
        "sf_fps_10s": record["sf_fps"][0], "sf_fps_60s": record["sf_fps"][1],
        # whole run (warm-up included), per learner iteration of `batch` env steps
        "per_iteration_s": {key: value / iterations for key, value in totals.items()},
        "iterations": iterations,
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
