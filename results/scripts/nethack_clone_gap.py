"""The imperfect-cloning gap on this machine (issue 13, item 7), first measurement: record the
scripted diver's games, clone them into a CPU-width `tty_lstm` π*, and compare expert and π* from
a new game (CLOSE: levels 1-3) and from the dlvl4 FAR start.

    python results/scripts/nethack_clone_gap.py WORKDIR [--games 40] [--updates 1500]

Steps already done in WORKDIR are not redone (the recording's games.db, the clone's module/),
so a stopped run continues. Writes WORKDIR/gap.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

WIDTHS = {"h_dim": 128, "msg_hdim": 32, "blstats_hdim": 64, "fc_after_cnn_hdim": 64, "char_edim": 8, "color_edim": 8}


def main() -> int:
    from ftcl.algorithms.pi_star import load_pi_star_module, save_pi_star
    from ftcl.pretrain.nethack_clone import (ExpertPlayer, PolicyPlayer, clone_policy, gap_summary, play_games,
                                             record_expert_games)

    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--games", type=int, default=40)
    parser.add_argument("--record-steps", type=int, default=3000)
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--eval-games", type=int, default=10)
    parser.add_argument("--eval-steps", type=int, default=2000)
    parser.add_argument("--greedy", action="store_true", help="π* takes its most likely action (default: samples)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # one core: two threads beside another job thrash (9 vs 150 policy steps/s)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if not (work / "games.db").exists():
        recorded = record_expert_games(work, args.games, seed=0, max_steps=args.record_steps)
        (work / "recorded.json").write_text(json.dumps(recorded))
        print(f"recorded {len(recorded)} games in {time.time() - started:.0f} s", flush=True)
    if not (work / "module").exists():
        t = time.time()
        module = clone_policy(work / "games.db", WIDTHS, args.updates, batch_size=8, sequence_length=32, lr=1e-3,
                              progress=lambda u, v: print(f"update {u}: {v}", flush=True))
        save_pi_star(module, work / "module")
        print(f"cloned in {time.time() - t:.0f} s", flush=True)
    module = load_pi_star_module(work / "module")
    rows = {}
    name_of_pi = "pi_star_greedy" if args.greedy else "pi_star"
    for name, agent in (("expert", ExpertPlayer(0)), (name_of_pi, PolicyPlayer(module, explore=not args.greedy))):
        for start in ("game", "dlvl4"):
            t = time.time()
            rows[f"{name}/{start}"] = gap_summary(play_games(agent, start, args.eval_games, args.eval_steps, seed=500))
            print(name, start, rows[f"{name}/{start}"], f"{time.time() - t:.0f} s", flush=True)
    (work / ("gap_greedy.json" if args.greedy else "gap.json")).write_text(json.dumps({"args": vars(args), "widths": WIDTHS, "rows": rows}, indent=1))
    print("| agent | start | games | mean deepest level | reached ≥ 4 | ≥ 5 | mean score gained | mean steps |")
    print("|---|---|---|---|---|---|---|---|")
    for key, row in rows.items():
        agent, start = key.split("/")
        print(f"| {agent} | {start} | {row['games']} | {row['dlvl_mean']:.1f} | {row['reach_4']:.2f} | {row['reach_5']:.2f} "
              f"| {row['score_mean']:.0f} | {row['steps_mean']:.0f} |")
    print(f"total {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
