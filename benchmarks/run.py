"""`ftcl bench`: throughput of ftcl's RLlib algorithms against plain PyTorch and Stable-Baselines3.

Parts (each prints one table; `--only` runs one):
  env     raw env steps/s with a random policy: RoboticSequence stages (Meta-World v3),
          CartPole, Montezuma (ALE), NetHackScore (NLE);
  sac     SAC with the paper's networks (4×256, Linear→LayerNorm→tanh first, LeakyReLU after;
          twin Q, auto-α, batch 128, one gradient step per env step) on RoboticSequence
          [push-wall]: the plain-PyTorch update (lower bound), SB3 SAC, ftcl RetentionSAC as
          configured by default with 1 and K env steps per learner call, for finetune and every
          retention method (l2, ewc, bc, ks, em), and each method's learner cost on a fixed batch;
  ppo     PPO on CartPole (2×64 tanh actor and critic, 4000 steps per iteration, minibatch
          128, 10 epochs): plain-PyTorch minibatch update, SB3 PPO, ftcl RetentionPPO with
          0 and 2 env runners, for finetune, l2, ewc, bc, ks, and each method's learner cost;
  memory  peak RSS of the process tree while Ray Tune runs a 2-trial RetentionSAC grid;
  rnd     PPO + RND on Montezuma's Revenge (jcwleo's CNNs, N envs × 128 steps, 4 epochs × 4
          minibatches): ftcl RetentionPPORND and the plain-PyTorch loop, interleaved (`--num-envs`).
Follow-ups (only with `--only`):
  sac-learner, ppo-learner  learner ms/update per method on a fixed batch, interleaved; method
          suffixes `_sep` (PPO BC in its own actor forward) and `_loop` (L2/EWC penalty as a
          per-parameter loop); `--profile` prints cProfile per method instead;
  plain-sac-bc  the plain-PyTorch SAC update with λ·BC on 128 buffer states (separate, fused);
  ppo-vs-sb3    RetentionPPO and SB3 PPO, one iteration per window, interleaved (`--num-envs`);
  ppo-profile   pyinstrument profile of RetentionPPO.train() (`--num-envs`);
  nethack       APPO on NetHack with the paper's tty_lstm network (`--widths`, CPU widths by default):
          ftcl RetentionAPPO against Sample Factory 2.1.1 (the authors' framework) at the same widths,
          `--workers` × `--num-envs` envs (default 2 × 4), rollout 32, `--batch` (1024), windows of
          `--window-s` after `--warmup-s`, interleaved; Sample Factory runs in its own venv
          (`--sf-venv`, made by `bash benchmarks/sample_factory_setup.sh DIR`).
Timings: warm-up first, then the median of `--repeats` timed windows; every row records the
1-minute load average at its measurement. Rows go to `--out` (CSV).

The benchmarks time whichever `ftcl` Python imports; to time another tree (say `git archive
<commit> ftcl` unpacked in DIR): `cd DIR && PYTHONPATH=<repository> python -m benchmarks.run ...`.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.common import (
    PPO_BATCH, PPO_EPOCHS, PPO_METHODS, PPO_MINIBATCH, SAC_BATCH, SAC_ENV_NAME, SAC_METHODS, Row, machine_info,
    median_pair, median_rate, print_table, ray_session, robotic_sequence_env, write_csv,
)

PARTS = ("env", "sac", "ppo", "memory", "rnd")
FOLLOW_UPS = ("sac-learner", "ppo-learner", "plain-sac-bc", "ppo-vs-sb3", "ppo-profile", "nethack")
FOLLOW_UP_REPEATS = {"sac-learner": 7, "ppo-learner": 7, "plain-sac-bc": 11, "ppo-vs-sb3": 5, "ppo-profile": 2, "nethack": 5}
SF_VENV = Path(".venv-sample-factory")
"""Where `nethack` looks for Sample Factory's venv unless `--sf-venv` says otherwise (relative: to the
working directory)."""
NEEDS = {"sac": "stable_baselines3", "ppo": "stable_baselines3", "ppo-vs-sb3": "stable_baselines3", "ppo-profile": "pyinstrument"}


def sac_part(steps: int, repeats: int, quick: bool, data_rows: int, steps_per_call: int,
             methods: list[str]) -> tuple[list[Row], dict[str, str]]:
    """Plain PyTorch, SB3 SAC and RetentionSAC rows on push-wall, then the learner rows."""
    from benchmarks import ftcl_rllib, plain_sac, sb3_peers

    rows, plain_rate = plain_sac.plain_rows(steps, repeats, quick)
    sb3_rate = {}
    for train_freq in [1] if quick else [1, steps_per_call]:
        env_rate, update_rate = median_pair(sb3_peers.sac_rates(steps, repeats, train_freq))
        sb3_rate[train_freq] = env_rate
        rows.append(Row("sac", "SB3 SAC", SAC_ENV_NAME, "-", f"train_freq={train_freq}, gradient_steps={train_freq}",
                        env_rate, update_rate, 1000 / update_rate, repeats))
    with ray_session(), tempfile.TemporaryDirectory(prefix="ftcl_bench_") as scratch:
        artifacts = ftcl_rllib.make_pretrained_artifacts(ftcl_rllib.sac_config(1), robotic_sequence_env, Path(scratch), data_rows)
        rows += ftcl_rllib.sac_rows(artifacts, data_rows, steps, repeats, steps_per_call, methods, sb3_rate, plain_rate)
        if len(methods) > 1:
            rows += ftcl_rllib.learner_rows("sac", artifacts, data_rows, methods, repeats, updates=25 if quick else 50)
    return rows, {"retention data": ftcl_rllib.data_note(data_rows)}


def ppo_part(iterations: int, repeats: int, quick: bool, data_rows: int, methods: list[str]) -> list[Row]:
    """Plain PyTorch, SB3 PPO (1 and 8 envs) and RetentionPPO rows on CartPole, then the learner rows."""
    import gymnasium as gym

    from benchmarks import ftcl_rllib, plain_ppo, sb3_peers

    plain_rate = median_rate(plain_ppo.update_rates(updates=200 if quick else 1000, repeats=repeats))
    rows = [Row("ppo", "plain PyTorch", "random batches", "-", "update only, minibatch 128", None, plain_rate,
                1000 / plain_rate, repeats)]
    sb3 = {num_envs: median_pair(sb3_peers.ppo_rates(iterations, repeats, num_envs)) for num_envs in (1, 8)}
    for num_envs, (env_rate, update_rate) in sb3.items():
        rows.append(Row("ppo", "SB3 PPO", "CartPole-v1", "-", f"{num_envs} env(s)", env_rate, update_rate, 1000 / update_rate, repeats))
    with ray_session(), tempfile.TemporaryDirectory(prefix="ftcl_bench_") as scratch:
        artifacts = ftcl_rllib.make_pretrained_artifacts(ftcl_rllib.ppo_config(0), lambda: gym.make("CartPole-v1"), Path(scratch), data_rows)
        rows += ftcl_rllib.ppo_rows(artifacts, data_rows, iterations, repeats, quick, methods, sb3, plain_rate)
        if len(methods) > 1:
            rows += ftcl_rllib.learner_rows("ppo", artifacts, data_rows, methods, repeats)
    return rows


def run_part(part: str, args: argparse.Namespace, repeats: int, methods: list[str]) -> tuple[str, list[Row], dict[str, str]]:
    """One part: its table title, rows and extra lines."""
    if part == "env":
        from benchmarks.env_rates import env_rows

        return "Raw env steps/s (random policy)", env_rows(args.steps or 1000, repeats, args.quick), {}
    if part == "sac":
        rows, extra = sac_part(args.steps or (100 if args.quick else 300), repeats, args.quick, args.data,
                               args.steps_per_learner_call, methods)
        return f"SAC, {SAC_ENV_NAME}, 4×256 paper MLPs, batch {SAC_BATCH}, UTD 1", rows, extra
    if part == "ppo":
        rows = ppo_part(1 if args.quick else 2, repeats, args.quick, args.data, methods)
        return f"PPO, CartPole-v1, 2×64 tanh, {PPO_BATCH} steps/iteration, minibatch {PPO_MINIBATCH}, {PPO_EPOCHS} epochs", rows, {}
    if part == "memory":
        from benchmarks.memory import memory_rows

        rows, extra = memory_rows(args.steps or 500, args.data)
        return "Peak memory of a 2-trial grid", rows, extra
    if part == "rnd":
        from benchmarks.rnd_rates import ENV_NAME, rnd_rows

        num_envs = args.num_envs if args.num_envs > 1 else 8
        return (f"PPO + RND, {ENV_NAME}, {num_envs} envs × 128 steps, interleaved",
                rnd_rows(num_envs, repeats), {})
    if part in ("sac-learner", "ppo-learner"):
        from benchmarks.ftcl_rllib import data_note, learner_part

        which = part.split("-")[0]
        rows = learner_part(which, args.data, methods, repeats, args.profile)
        title = (f"SAC learner, fixed replay batch, 50 minibatches of {SAC_BATCH} per call" if which == "sac"
                 else f"PPO learner, fixed {PPO_BATCH}-step CartPole batch, 1 epoch, minibatch {PPO_MINIBATCH}")
        return title, rows, {"retention data": data_note(args.data)}
    if part == "nethack":
        from benchmarks.nethack_rates import ENV_NAME, nethack_rows, parse_widths

        num_envs = args.num_envs if args.num_envs > 1 else 4
        window_s = args.window_s if args.window_s is not None else (20.0 if args.quick else 60.0)
        warmup_s = args.warmup_s if args.warmup_s is not None else (10.0 if args.quick else 30.0)
        rows, extra = nethack_rows(args.sf_venv, args.workers, num_envs, args.batch, parse_widths(args.widths), repeats,
                                   window_s, warmup_s)
        return f"APPO + tty_lstm, {ENV_NAME}, ftcl vs Sample Factory, interleaved", rows, extra
    if part == "plain-sac-bc":
        from benchmarks.plain_sac import bc_overhead_rows

        return f"Plain-PyTorch SAC update ± λ·BC ({SAC_BATCH} buffer states), 4×256, batch {SAC_BATCH}", bc_overhead_rows(repeats), {}
    from benchmarks import ppo_followups

    if part == "ppo-vs-sb3":
        return (f"RetentionPPO vs SB3 PPO, CartPole-v1, {args.num_envs} env(s), interleaved",
                ppo_followups.vs_sb3_rows(args.num_envs, repeats), {})
    return f"RetentionPPO.train() under pyinstrument, {args.num_envs} env(s)", ppo_followups.profile_rows(args.num_envs, repeats), {}


def part_methods(part: str, methods: str | None, quick: bool) -> list[str]:
    """The methods a part runs (`--methods` filtered for PPO; defaults per part)."""
    if part == "sac":
        return methods.split(",") if methods else (["finetune", "l2", "bc"] if quick else SAC_METHODS)
    if part == "ppo":
        chosen = [m for m in (methods.split(",") if methods else PPO_METHODS) if m in PPO_METHODS]
        return ["finetune", "l2"] if quick else chosen
    if part in ("sac-learner", "ppo-learner"):
        return methods.split(",") if methods else (SAC_METHODS if part == "sac-learner" else PPO_METHODS)
    return []


def check_methods(part: str, methods: list[str]) -> str | None:
    """An error message for methods a part does not know, else None."""
    if part == "sac" and sorted(set(methods) - set(SAC_METHODS)):
        return f"unknown SAC methods {sorted(set(methods) - set(SAC_METHODS))}; allowed: {SAC_METHODS}"
    if part in ("sac-learner", "ppo-learner"):
        from benchmarks.ftcl_rllib import split_variant

        for name in methods:
            try:
                split_variant(name, SAC_METHODS if part == "sac-learner" else PPO_METHODS)
            except ValueError as error:
                return str(error)
    return None


def check_nethack(args: argparse.Namespace) -> str | None:
    """An error message for bad `nethack` sizes or a missing Sample Factory venv, else None."""
    from benchmarks.nethack_rates import check_sf_venv, parse_widths

    if args.workers < 1 or args.batch < 32 or args.batch % 32:
        return "--workers must be >= 1 and --batch a positive multiple of 32 (the rollout and sequence length)"
    if (args.window_s is not None and args.window_s <= 0) or (args.warmup_s is not None and args.warmup_s < 0):
        return "--window-s must be > 0 and --warmup-s >= 0"
    try:
        parse_widths(args.widths)
    except ValueError as error:
        return str(error)
    return check_sf_venv(args.sf_venv)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftcl bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  ftcl bench --quick\n  ftcl bench --only sac --methods finetune,bc --out results/throughput.csv\n"
               "  ftcl bench --only ppo-learner --methods finetune,bc,bc_sep,l2,l2_loop --repeats 11\n"
               "  ftcl bench --only ppo-vs-sb3 --num-envs 8 --repeats 5\n"
               "  ftcl bench --only nethack --sf-venv /path/to/sf_venv --out results/nethack_throughput.csv\n"
               "(the same as python -m benchmarks.run ... from the repository root)",
    )
    parser.add_argument("--quick", action="store_true", help="small windows and fewer settings (< ~3 min)")
    parser.add_argument("--only", choices=PARTS + FOLLOW_UPS, default=None, help="run one part or follow-up")
    parser.add_argument("--steps", type=int, default=None, help="env steps per timed window (SAC/env); PPO uses iterations of 4000")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed windows per measurement (median reported); ppo-profile: iterations profiled")
    parser.add_argument("--data", type=int, default=2048, help="transitions of π* data for bc/ewc/em")
    parser.add_argument("--steps-per-learner-call", type=int, default=50,
                        help="SAC rollout_fragment_length K: K env steps, then K gradient steps (UTD 1)")
    parser.add_argument("--methods", default=None, help="comma-separated subset of retention methods")
    parser.add_argument("--num-envs", type=int, default=1,
                        help="envs per env runner (ppo-vs-sb3, ppo-profile; rnd: default 8; nethack: default 4)")
    nethack = parser.add_argument_group("nethack (ftcl vs Sample Factory)")
    nethack.add_argument("--workers", type=int, default=2, help="env runners (ftcl) = rollout workers (Sample Factory)")
    nethack.add_argument("--batch", type=int, default=1024, help="env steps per learner update, a multiple of 32")
    nethack.add_argument("--widths", default=None,
                         help="tty_lstm widths over the CPU defaults, e.g. h_dim=256,msg_hdim=64 (defaults: "
                              "h_dim=128,msg_hdim=32,blstats_hdim=64,fc_after_cnn_hdim=64,char_edim=8,color_edim=8)")
    nethack.add_argument("--window-s", type=float, default=None, help="seconds per timed window (default 60; --quick 20)")
    nethack.add_argument("--warmup-s", type=float, default=None, help="warm-up seconds before timing (default 30; --quick 10)")
    nethack.add_argument("--sf-venv", type=Path, default=SF_VENV,
                         help=f"Sample Factory's venv (default {SF_VENV}; make one with "
                              "bash benchmarks/sample_factory_setup.sh DIR)")
    parser.add_argument("--profile", action="store_true", help="sac-learner/ppo-learner: print cProfile per method")
    parser.add_argument("--out", type=Path, default=None, help="CSV file for all rows")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark parts, print one table each, write the CSV; returns an exit code."""
    import importlib.util

    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if (args.repeats is not None and args.repeats < 1) or (args.steps is not None and args.steps < 1) \
            or args.data < 256 or args.num_envs < 1:
        print("ftcl bench: error: --repeats, --steps and --num-envs must be >= 1 and --data >= 256", file=sys.stderr)
        return 2
    parts = [args.only] if args.only else (["env", "sac", "ppo"] if args.quick else list(PARTS))
    methods = {part: part_methods(part, args.methods, args.quick) for part in parts}
    for part in parts:
        problem = check_methods(part, methods[part])
        if problem is None and part == "nethack":
            problem = check_nethack(args)
        if problem is None and part in NEEDS and importlib.util.find_spec(NEEDS[part]) is None:
            problem = f"part {part!r} needs {NEEDS[part]}: `make bench` installs it, or pip install -e '.[bench]'"
        if problem:
            print(f"ftcl bench: error: {problem}", file=sys.stderr)
            return 2
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    info = machine_info(argv)
    print("# ftcl bench")
    for key, value in info.items():
        print(f"{key}: {value}")
    all_rows: list[Row] = []
    for part in parts:
        default = FOLLOW_UP_REPEATS.get(part, 3)
        repeats = args.repeats or (min(default, 1 if part in PARTS else 3) if args.quick else default)
        title, rows, extra = run_part(part, args, repeats, methods[part])
        print_table(title, rows, extra)
        all_rows += rows
    if args.out:
        write_csv(args.out, all_rows, info)
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
