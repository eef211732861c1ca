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
3. `play_games(agent, start, ...)` plays expert or π* from a start and `gap_summary` sums the games up.

`pretrain_by_cloning(spec, out)` is `ftcl pretrain` for a spec with `pretrained.clone`: the three
steps in `<out>.partial/`, each kept when done (the recording's `data/games.db`, the clone's
checkpoint every `checkpoint_every_updates`), so `--resume` continues a stopped run; then the
folder is renamed to `out`:
- `module/`: π* (`ftcl.algorithms.pi_star`, actor and baseline);
- `data/`: the expert's ttyrecs (`expert/<run>/`) and `games.db`, registered relative to itself so
  the folder can move — the fine-tuning spec's `pretrained.data` (BC's sequences, EWC's Fisher);
- `provenance.json`: command, spec, clone settings, the expert's recorded games, the gap (expert and
  π* from each evaluation start), git SHA, versions, the sha256 of `module` and `data`.
A resumed clone restarts its dataset stream (from a new shuffle) at the saved update.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch.nn import functional as F

if TYPE_CHECKING:
    from ftcl.spec import ExperimentSpec

CHECKPOINT_FILE = "clone_checkpoint.pt"


def record_expert_games(root: str | Path, games: int, seed: int = 0, max_steps: int = 5000,
                        env_options: dict[str, Any] | None = None,
                        progress: Callable[[int], None] | None = None) -> list[dict[str, float]]:
    """Play the diver for `games` seeded games, recorded under root/expert; register them in
    root/games.db. Returns each game's Table-4 metrics (`ftcl.envs.nethack.episode_metrics`)."""
    from ftcl.data.ttyrecs import ttyrec_database
    from ftcl.envs.nethack import NetHackEnv, episode_metrics
    from ftcl.envs.nethack_expert import DescendBot

    root = Path(root)
    env = NetHackEnv({**(env_options or {}), "seed": seed, "max_episode_steps": max_steps, "start": "game",
                      "ttyrec_dir": str(root / "expert")})
    bot, results = DescendBot(seed), []
    try:
        for game in range(games):
            if progress is not None:
                progress(game)
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
                 progress_every_s: float = 30.0, checkpoint: str | Path | None = None,
                 checkpoint_every: int = 250):
    """The `tty_lstm` module trained by behavioural cloning on the database's games (module doc).
    With `checkpoint`, the module and optimizer are saved there every `checkpoint_every` updates
    and training continues from a checkpoint found there."""
    from ftcl.data.ttyrecs import TtyrecBatches

    torch.manual_seed(seed)
    module = tty_lstm_module(model_options)
    parameters = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=lr)
    done = 0
    if checkpoint is not None and Path(checkpoint).is_file():
        saved = torch.load(checkpoint, weights_only=True)
        module.load_state_dict(saved["module"])
        optimizer.load_state_dict(saved["optimizer"])
        done = int(saved["update"])
        torch.manual_seed(seed + done)
    stream = iter(TtyrecBatches(db, batch_size, sequence_length, shuffle=True, loop_forever=True))
    zeros = torch.zeros(batch_size, module.net.config.h_dim)
    state, last_report = {"h": zeros, "c": zeros.clone()}, time.monotonic()
    for update in range(done + 1, updates + 1):
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
        if checkpoint is not None and (update % checkpoint_every == 0 or update == updates):
            partial = Path(str(checkpoint) + ".partial")
            torch.save({"module": module.state_dict(), "optimizer": optimizer.state_dict(), "update": update}, partial)
            partial.replace(checkpoint)  # whole or not at all
    return module


# ------------------------------------------------------------------------ playing expert and π*


class ExpertPlayer:
    """The diver as a player of `play_games`."""

    def __init__(self, seed: int = 0):
        from ftcl.envs.nethack_expert import DescendBot

        self.bot = DescendBot(seed)

    def reset(self) -> None:
        self.bot.reset()

    def __call__(self, observation: dict[str, np.ndarray]) -> int:
        return self.bot.action(observation)


class PolicyPlayer:
    """π* one step at a time with its LSTM state; samples from its policy unless `explore` is off."""

    def __init__(self, module, explore: bool = True):
        from ftcl.evaluation.suites import initial_state_batch

        self.module, self.explore = module, explore
        self.initial = lambda: initial_state_batch(module, 1)
        self.state = self.initial()

    def reset(self) -> None:
        self.state = self.initial()

    def __call__(self, observation: dict[str, np.ndarray]) -> int:
        import tree

        from ftcl.evaluation.suites import policy_actions

        actions, self.state = policy_actions(self.module, tree.map_structure(lambda x: np.asarray(x)[None], observation),
                                             self.explore, self.state)
        return int(actions[0])


def play_games(player, start: str, games: int, steps: int, seed: int,
               env_options: dict[str, Any] | None = None) -> list[dict[str, float]]:
    """Table-4 metrics of `games` seeded games from `start` (an env `start`), at most `steps` each."""
    from ftcl.envs.nethack import NetHackEnv, episode_metrics

    env = NetHackEnv({**(env_options or {}), "seed": seed, "start": start, "max_episode_steps": steps})
    results = []
    try:
        for _ in range(games):
            observation, info = env.reset()
            player.reset()
            done = False
            while not done:
                observation, _, terminated, truncated, info = env.step(player(observation))
                done = terminated or truncated
            results.append(episode_metrics(info))
    finally:
        env.close()
    return results


def gap_summary(results: list[dict[str, float]]) -> dict[str, float]:
    """Games, mean deepest level, the fractions reaching levels 4 and 5, mean score gained and steps."""
    depth = np.array([r["dlvl"] for r in results])
    return {"games": len(results), "dlvl_mean": float(depth.mean()), "reach_4": float((depth >= 4).mean()),
            "reach_5": float((depth >= 5).mean()), "score_mean": float(np.mean([r["score"] for r in results])),
            "steps_mean": float(np.mean([r["steps"] for r in results]))}


# ------------------------------------------------------------------------ `ftcl pretrain`


def _say(message: str) -> None:
    print(f"[ftcl] clone: {message}", file=sys.stderr, flush=True)


def pretrain_by_cloning(spec: ExperimentSpec, out: str | Path, command: str, resume: bool = False) -> Path:
    """`ftcl pretrain` of a spec with `pretrained.clone` (module doc); returns `out`. One torch
    thread: the recipe is one process, and more threads beside other work thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _pretrain_by_cloning(spec, Path(out), command, resume)
    finally:
        torch.set_num_threads(threads)


def _pretrain_by_cloning(spec: ExperimentSpec, out: Path, command: str, resume: bool) -> Path:
    import yaml

    from ftcl.algorithms.pi_star import agent_parts, save_pi_star
    from ftcl.data.integrity import sha256_of, write_provenance
    from ftcl.runner import spec_differences
    from ftcl.spec import ExperimentSpec, SpecError
    from ftcl.tracking import store

    settings = spec.pretrained.clone
    work = out.with_name(out.name + ".partial")
    saved_spec = work / "spec.resolved.yaml"
    if work.exists() and not resume:
        raise SpecError(f"{work} holds a stopped pre-training: `ftcl pretrain ... --resume` continues it; "
                        "delete the folder to start over")
    if resume:
        if not saved_spec.is_file():
            raise SpecError(f"--resume: no stopped pre-training of {spec.name!r} at {work}")
        changed = spec_differences(ExperimentSpec.model_validate(yaml.safe_load(saved_spec.read_text())), spec)
        if changed:
            raise SpecError(f"--resume continues {work} with the spec it started with, and the spec given now differs "
                            f"({'; '.join(changed[:3])}); give the same spec and --set overrides")
        _say(f"resuming {work}")
    else:
        work.mkdir(parents=True)
        saved_spec.write_text(yaml.safe_dump(spec.model_dump(mode="json", by_alias=True), sort_keys=False))
    data, recorded_file = work / "data", work / "recorded_games.json"
    started = time.monotonic()
    if not (recorded_file.is_file() and (data / "games.db").is_file()):  # a recording stopped midway is redone
        recorded_file.unlink(missing_ok=True)                                    # whole (it is the cheap step)
        shutil.rmtree(data, ignore_errors=True)
        recorded = record_expert_games(data, settings.games, seed=settings.seed, max_steps=settings.record_steps,
                                       env_options=spec.env.options,
                                       progress=lambda game: _say(f"recording expert game {game + 1}/{settings.games}"))
        recorded_file.write_text(json.dumps(recorded))
        _say(f"recorded {len(recorded)} games, {sum(r['steps'] for r in recorded):,.0f} steps, "
             f"in {time.monotonic() - started:.0f} s")
    recorded = json.loads(recorded_file.read_text())

    options = dict(spec.algorithm.model_config_options)
    module = clone_policy(
        data / "games.db", options, settings.updates, batch_size=settings.batch_size,
        sequence_length=settings.sequence_length, lr=settings.lr, gamma=settings.gamma,
        value_coeff=settings.value_coeff, seed=settings.seed, checkpoint=work / CHECKPOINT_FILE,
        checkpoint_every=settings.checkpoint_every_updates,
        progress=lambda update, losses: _say(f"update {update}/{settings.updates}: " + ", ".join(
            f"{name} {value:.3f}" for name, value in losses.items())))
    save_pi_star(module, work / "module")

    gap = {}
    for name, player in (("expert", ExpertPlayer(settings.seed)), ("pi_star", PolicyPlayer(module, explore=True))):
        for start in settings.evaluation_starts if settings.evaluation_games else []:
            games = play_games(player, start, settings.evaluation_games, settings.evaluation_steps,
                               seed=10_000 + settings.seed, env_options=spec.env.options)
            gap[f"{name}/{start}"] = gap_summary(games)
            _say(f"{name} from {start}: {gap[f'{name}/{start}']}")
    provenance = {
        "command": command,
        "spec": spec.name,
        "env": spec.env.name,
        "env_options": spec.env.options,
        "model": spec.algorithm.model,
        "model_options": options,
        "recipe": "behavioural clone of the scripted diver (ftcl.pretrain.nethack_clone)",
        "clone": settings.model_dump(),
        "recorded_games": {"games": len(recorded), "steps": int(sum(r["steps"] for r in recorded)),
                           **{key: value for key, value in gap_summary(recorded).items() if key != "games"}},
        "contents": {part: len(names) for part, names in agent_parts(module).items()},
        "gap": gap,
        "gap_note": (f"{settings.evaluation_games} seeded games per start (env seed {10_000 + settings.seed}), "
                     f"≤ {settings.evaluation_steps} steps; π* samples from its policy"),
        "git_sha": store.git_sha(),
        "versions": store.package_versions(),
        "created": datetime.now().isoformat(timespec="seconds"),
        "sha256": {"module": sha256_of(work / "module"), "data": sha256_of(data)},
    }
    (work / CHECKPOINT_FILE).unlink(missing_ok=True)
    saved_spec.unlink()
    write_provenance(work, provenance)  # last and whole: a folder without it is unfinished
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    return out
