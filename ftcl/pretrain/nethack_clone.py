"""π* for the imperfect-cloning experiment (issue 13, item 7): a behavioural clone of the scripted
diver (`ftcl.envs.nethack_expert`), trained on its recorded games through the ttyrec loader — the
paper's recipe (π* = a clone of AutoAscend trained on NLD-AA) at a size this machine can run.

1. `record_expert_games(root, games, ...)` plays the diver in the `nethack` env with `ttyrec_dir`
   (NLE's own recordings, readable as NLD-AA is) and registers them in `root/games.db`.
2. `clone_policy(db, ...)` trains the `tty_lstm` module on 32-step game streams, LSTM state
   carried per stream and reset where a game starts:
     policy:   cross-entropy of π_θ(·|h_t) to the recorded action a_t (valid steps);
     baseline: TD(0) towards r_t + γ·V(h_{t+1}) (target detached), r_t = the score gained by the
               step, on steps whose successor is in the same game and in the same minibatch,
   so π* is a whole agent (actor and critic) as fine-tuning needs it. Per-step errors of such a
   clone compound on the early levels (CLOSE), so it rarely reaches the levels (FAR) where it
   would still be competent if started there: the gap the experiment measures.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn import functional as F


def record_expert_games(root: str | Path, games: int, seed: int = 0, max_steps: int = 5000) -> list[dict[str, float]]:
    """Play the diver for `games` seeded games, recorded under root/expert; register them in
    root/games.db. Returns each game's Table-4 metrics (`ftcl.envs.nethack.episode_metrics`)."""
    from ftcl.data.ttyrecs import ttyrec_database
    from ftcl.envs.nethack import NetHackEnv, episode_metrics
    from ftcl.envs.nethack_expert import DescendBot

    root = Path(root)
    env = NetHackEnv({"seed": seed, "max_episode_steps": max_steps, "ttyrec_dir": str(root / "expert")})
    bot, results = DescendBot(seed), []
    try:
        for _ in range(games):
            observation, info = env.reset()
            bot.reset()
            terminated = truncated = False
            while not (terminated or truncated):
                observation, _, terminated, truncated, info = env.step(bot.action(observation))
            results.append(episode_metrics(info))
            if not terminated:
                env.quit_game()  # a truncated game enters the xlogfile only when it ends
    finally:
        env.close()
    ttyrec_database(root, root / "games.db")
    return results


def tty_lstm_module(model_options: dict[str, Any]):
    """A `tty_lstm` RLModule for the nethack env's spaces."""
    from ftcl.envs.nethack import NetHackEnv
    from ftcl.models.tty_lstm_module import TtyLSTMModule

    env = NetHackEnv({})
    try:
        return TtyLSTMModule(observation_space=env.observation_space, action_space=env.action_space,
                             model_config=dict(model_options))
    finally:
        env.close()


def clone_losses(module, batch: dict[str, torch.Tensor], state: Any, gamma: float) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """(policy cross-entropy, baseline TD loss, state after the minibatch) on one minibatch (module doc)."""
    net = module.net
    core, (h, c) = net.core_outputs(batch["obs"], batch["prev_actions"], batch["is_first"],
                                    (state["h"][None], state["c"][None]))
    logits, values = net.policy(core), net.baseline(core).squeeze(-1)
    valid = batch["valid"]
    policy_loss = F.cross_entropy(logits[valid], batch["actions"][valid]) if valid.any() else logits.sum() * 0
    rewards = (batch["scores"][:, 1:] - batch["scores"][:, :-1]).float()
    same_game = ~batch["is_first"][:, 1:] & (batch["gameids"][:, 1:] == batch["gameids"][:, :-1]) & valid[:, :-1]
    target = rewards + gamma * values[:, 1:].detach()
    value_loss = ((values[:, :-1] - target)[same_game] ** 2).mean() if same_game.any() else values.sum() * 0
    return policy_loss, value_loss, {"h": h[0].detach(), "c": c[0].detach()}


def clone_policy(db: str | Path, model_options: dict[str, Any], updates: int, batch_size: int = 8,
                 sequence_length: int = 32, lr: float = 1e-3, gamma: float = 0.999, value_coeff: float = 0.5,
                 seed: int = 0, progress: Callable[[int, dict[str, float]], None] | None = None,
                 progress_every_s: float = 30.0):
    """The `tty_lstm` module trained by behavioural cloning on the database's games (module doc)."""
    from ftcl.data.ttyrecs import TtyrecBatches

    torch.manual_seed(seed)
    module = tty_lstm_module(model_options)
    parameters = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=lr)
    stream = iter(TtyrecBatches(db, batch_size, sequence_length, shuffle=True, loop_forever=True))
    zeros = torch.zeros(batch_size, module.net.config.h_dim)
    state, last_report = {"h": zeros, "c": zeros.clone()}, time.monotonic()
    for update in range(1, updates + 1):
        raw = next(stream)
        batch = {key: torch.as_tensor(np.asarray(raw[key])) for key in
                 ("obs", "prev_actions", "actions", "is_first", "valid", "gameids", "scores")}
        batch["actions"] = batch["actions"].clamp(min=0)
        policy_loss, value_loss, state = clone_losses(module, batch, state, gamma)
        optimizer.zero_grad()
        (policy_loss + value_coeff * value_loss).backward()
        torch.nn.utils.clip_grad_norm_(parameters, 4.0)
        optimizer.step()
        if progress is not None and (update == updates or time.monotonic() - last_report >= progress_every_s):
            progress(update, {"policy_loss": policy_loss.item(), "value_loss": value_loss.item()})
            last_report = time.monotonic()
    return module
