"""π* as a checkpoint: the whole pre-trained agent, written from a learner and loaded strictly.

A π* folder (the `module/` of `ftcl pretrain`'s output) is an RLModule checkpoint of the
*learner's* module — `class_and_ctor_args.pkl`, `module_state.pkl`, `metadata.json` — plus
`agent.json`, which says what the checkpoint holds:

    {"format": 1,
     "parts": {"actor": [tensor names], "critics": [...], "other": [...]},
     "log_alpha": log α of SAC at export (null for PPO/APPO),
     "target_networks": "follow"}

- actor and critics are named by the module's `RetentionPolicyAPI` (`actor_parameters`,
  `critic_parameters`: SAC's twin Q-networks, PPO/APPO's value head); "other" holds the rest
  (buffers, parameters of neither);
- target networks are not stored: they *follow* their networks, i.e. on load each target is set
  to a copy of its network (θ̄ ← θ, as at the start of every SAC run; at the end of pre-training
  θ̄ differs from θ only by the Polyak lag), which keeps the artifact small.
- a teacher that a recurrent module carries for kickstarting (`teacher_copies`) is not stored
  either: on load it is set to π*'s network, the frozen copy it is meant to be.

Loading (`load_pi_star_into`) is strict: every tensor of the receiving module except its targets
must be in the checkpoint with the same shape, and nothing else may be — a checkpoint without
critics, a truncated state file or another architecture is a ValueError naming what differs,
never a silent partial load. `read_pi_star` checks the folder and its contents without a module,
so specs are refused before anything is written (`ftcl validate` reads it: no torch import).
"""
from __future__ import annotations

import json
import math
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # torch is imported where a module is loaded, so `ftcl validate` stays light
    import torch

AGENT_FILE = "agent.json"
"""The part of a π* folder that says what it holds (module doc)."""
STATE_FILE = "module_state.pkl"
CHECKPOINT_FILES = ("class_and_ctor_args.pkl", STATE_FILE, AGENT_FILE)
"""What a π* folder must hold."""
FORMAT = 1

InitialAlpha = float | Literal["from_pretrained"]
"""SAC's α at fine-tuning start: π*'s own (`from_pretrained`) or a number."""


@dataclass
class PiStar:
    """A π* checkpoint read from disk: its tensors (numpy, without targets) and what they are."""

    path: Path
    state: dict[str, np.ndarray]
    parts: dict[str, list[str]]
    log_alpha: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_critics(self) -> bool:
        return bool(self.parts.get("critics"))

    def contents(self) -> dict[str, Any]:
        """A summary for provenance files: tensors per part, parameters, α."""
        counts = {part: len(names) for part, names in self.parts.items()}
        parameters = {part: int(sum(self.state[n].size for n in names)) for part, names in self.parts.items()}
        alpha = None if self.log_alpha is None else math.exp(self.log_alpha)
        return {"tensors": counts, "parameters": parameters, "alpha": alpha, "target_networks": "follow"}


def target_network_prefixes(module: torch.nn.Module) -> dict[str, str]:
    """{target prefix: network prefix} of a module's target networks ({} if it has none (yet))."""
    pairs_of = getattr(module, "get_target_network_pairs", None)
    if pairs_of is None:
        return {}
    try:
        pairs = pairs_of()
    except AttributeError:  # targets are made by the Learner (make_target_networks); a bare module has none
        return {}
    names = {id(sub): name for name, sub in module.named_modules()}
    return {names[id(target)]: names[id(network)] for network, target in pairs
            if id(target) in names and id(network) in names}


def follower_prefixes(module: torch.nn.Module) -> dict[str, str]:
    """{prefix: network prefix} of what is not stored in π* but set from its network on load: target
    networks and a carried teacher (`RetentionPolicyAPI.teacher_copies`)."""
    copies = getattr(module, "teacher_copies", None)
    return {**target_network_prefixes(module), **(copies() if copies is not None else {})}


def _under(name: str, prefixes: Any) -> str | None:
    for prefix in prefixes:
        if name == prefix or name.startswith(prefix + "."):
            return prefix
    return None


def agent_parts(module: torch.nn.Module) -> dict[str, list[str]]:
    """The module's state tensors (targets and a carried teacher excluded) grouped as actor, critics and other."""
    targets = follower_prefixes(module)
    actor = set(module.actor_parameters())  # type: ignore[attr-defined]
    critics = set(module.critic_parameters()) - actor  # type: ignore[attr-defined]
    parts: dict[str, list[str]] = {"actor": [], "critics": [], "other": []}
    for name in module.state_dict():
        if _under(name, targets):
            continue
        parts["actor" if name in actor else "critics" if name in critics else "other"].append(name)
    return parts


def save_pi_star(module: Any, path: str | Path, log_alpha: float | None = None) -> Path:
    """Write `module` (a full, not inference-only, RLModule with `RetentionPolicyAPI`) as π*."""
    path = Path(path)
    parts = agent_parts(module)
    full = module.state_dict()
    state = {name: full[name].detach().cpu().numpy() for names in parts.values() for name in names}
    # Written beside the target, then renamed: a process that dies mid-write leaves only `*.partial`,
    # never a folder under the final name that looks like π*.
    partial = path.with_name(path.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    module.save_to_path(str(partial), state=state)
    manifest = {"format": FORMAT, "parts": parts, "log_alpha": log_alpha, "target_networks": "follow"}
    (partial / AGENT_FILE).write_text(json.dumps(manifest, indent=1))
    if path.exists():
        shutil.rmtree(path)
    partial.rename(path)
    return path


def read_pi_star(path: str | Path, *, needs_critics: bool = False, needs_alpha: bool = False) -> PiStar:
    """Read and check a π* folder; ValueError naming what is missing or broken."""
    folder = Path(path)
    hint = "(write π* with `ftcl pretrain`, or ftcl.algorithms.pi_star.save_pi_star)"
    if not folder.is_dir():
        raise ValueError(f"π* checkpoint {str(path)!r} is not a directory {hint}")
    missing = [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]
    if missing == [AGENT_FILE]:
        raise ValueError(
            f"π* checkpoint {str(path)!r} lacks {AGENT_FILE}: it is a bare RLModule checkpoint (such as an "
            f"env runner's inference-only module, without critics or α), not a whole agent {hint}"
        )
    if missing:
        raise ValueError(f"π* checkpoint {str(path)!r} is not an RLModule checkpoint: it lacks {missing} {hint}")
    try:
        manifest = json.loads((folder / AGENT_FILE).read_text())
        parts = {str(part): [str(n) for n in names] for part, names in manifest["parts"].items()}
        log_alpha = manifest.get("log_alpha")
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT}")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"π* checkpoint {str(path)!r}: {AGENT_FILE} is unreadable ({error}) {hint}") from None
    try:
        with open(folder / STATE_FILE, "rb") as f:
            state = pickle.load(f)
        state = {str(k): np.asarray(v) for k, v in state.items()}
    except Exception as error:  # a truncated or foreign pickle raises many kinds of errors
        raise ValueError(f"π* checkpoint {str(path)!r}: {STATE_FILE} is unreadable ({type(error).__name__}: "
                         f"{error}) {hint}") from None
    absent = {part: [n for n in names if n not in state] for part, names in parts.items()}
    absent = {part: names for part, names in absent.items() if names}
    if absent:
        raise ValueError(f"π* checkpoint {str(path)!r} is truncated: {STATE_FILE} lacks tensors that {AGENT_FILE} "
                         f"lists: {_describe(absent)}")
    if not parts.get("actor"):
        raise ValueError(f"π* checkpoint {str(path)!r} holds no actor tensors")
    if needs_critics and not parts.get("critics"):
        raise ValueError(f"π* checkpoint {str(path)!r} holds no critic tensors; fine-tuning needs π*'s critics "
                         f"(SAC's Q-networks, PPO/APPO's value head) {hint}")
    if needs_alpha and log_alpha is None:
        raise ValueError(f"π* checkpoint {str(path)!r} holds no SAC temperature α; give a number as "
                         "`pretrained.initial_alpha` or re-export π* from a SAC run")
    return PiStar(path=folder, state=state, parts=parts,
                  log_alpha=None if log_alpha is None else float(log_alpha))


def _describe(names_by_part: dict[str, list[str]], shown: int = 4) -> str:
    def some(names: list[str]) -> str:
        more = f", … ({len(names)} in all)" if len(names) > shown else ""
        return ", ".join(names[:shown]) + more

    return "; ".join(f"{part}: {some(names)}" for part, names in names_by_part.items())


def load_pi_star_into(module: torch.nn.Module, pi_star: PiStar) -> None:
    """Set every tensor of `module` from π* (targets and a carried teacher follow their networks);
    strict (module doc)."""
    import torch

    targets = follower_prefixes(module)
    current = module.state_dict()
    expected = {name: tensor for name, tensor in current.items() if not _under(name, targets)}
    parts = agent_parts(module)
    part_of = {name: part for part, names in parts.items() for name in names}
    missing: dict[str, list[str]] = {}
    for name in expected:
        if name not in pi_star.state:
            missing.setdefault(part_of.get(name, "other"), []).append(name)
    unexpected = [name for name in pi_star.state if name not in expected]
    mismatched = [f"{name} {tuple(pi_star.state[name].shape)} vs {tuple(tensor.shape)}"
                  for name, tensor in expected.items()
                  if name in pi_star.state and tuple(pi_star.state[name].shape) != tuple(tensor.shape)]
    problems = []
    if missing:
        problems.append(f"it lacks {_describe(missing)}")
    if unexpected:
        problems.append(f"it has tensors the module does not: {_describe({'unexpected': unexpected})}")
    if mismatched:
        problems.append(f"shapes differ (checkpoint vs module): {_describe({'tensors': mismatched})}")
    if any("returns_normalizer" in name for names in [*missing.values(), unexpected] for name in names):
        problems.append("the model option normalize_returns must be what π* was trained with")
    if problems:
        raise ValueError(f"π* checkpoint {str(pi_star.path)!r} does not fit {type(module).__name__}: "
                         + "; ".join(problems))
    loaded = {name: torch.as_tensor(pi_star.state[name], dtype=tensor.dtype, device=tensor.device)
              for name, tensor in expected.items()}
    for name in current:
        target = _under(name, targets)
        if target is not None:  # θ̄ ← θ (a carried teacher: θ_teacher ← θ*)
            network_name = targets[target] + name[len(target):]
            loaded[name] = loaded[network_name].clone()
    module.load_state_dict(loaded, strict=True)


def load_pi_star_module(path: str | Path) -> Any:
    """π*'s full RLModule, built from its checkpoint's class and constructor arguments and loaded
    strictly (`load_pi_star_into`); RLlib's `RLModule.from_checkpoint` alone loads with strict=False."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    pi_star = read_pi_star(path)
    module = RLModule.from_checkpoint(str(pi_star.path))
    load_pi_star_into(module, pi_star)
    return module
