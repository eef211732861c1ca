"""The paper's NetHack π* into ftcl's `TtyLSTMNet`: from the training format of Tuyls et al.
(`torch.load(p)["learner_state"]["model"]`) or from the authors' sample-factory conversion
(`torch.load(p)["model"]`), one tensor for one tensor, never a partial load.

Key layouts:
- Tuyls et al.: `topline_encoder.*`, `bottomline_encoder.*`, `screen_encoder.*`, `crop.*`,
  `extract_crop_representation.*`, `fc.*` (the encoder), `core.*` (the LSTM), `policy.*`,
  `baseline.*` — ftcl's own names;
- sample-factory: `encoder.<the same encoder keys>`, `core.core.*`, `critic_linear.*` (the
  baseline), `action_parameterization.distribution_linear.*` (the policy).

The network's widths are read from the checkpoint's shapes (`config_from_state`). A key of the
network the checkpoint lacks, a checkpoint key nothing takes, or a shape that differs is a ValueError
that names them. A checkpoint with a returns normaliser (`returns_normalizer.*`: the authors trained
with normalised returns) gives a network with one (`normalize_returns`), so its value head keeps
its scale.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Mapping

import torch

from ftcl.models.tty_lstm import TtyLSTMNet, TtyNetConfig

ENCODER_PREFIXES = ("topline_encoder.", "bottomline_encoder.", "screen_encoder.", "crop.", "extract_crop_representation.", "fc.")
SAMPLE_FACTORY_RENAMES = (("encoder.", ""), ("core.core.", "core."), ("critic_linear.", "baseline."),
                          ("action_parameterization.distribution_linear.", "policy."),
                          ("returns_normalizer.", "returns_normalizer."))
FORMATS = ("tuyls", "sample_factory")


def _renamed(key: str, checkpoint_format: str) -> str | None:
    if checkpoint_format == "tuyls":
        return key
    for old, new in SAMPLE_FACTORY_RENAMES:
        if key.startswith(old):
            renamed = new + key[len(old):]
            if old == "encoder." and not renamed.startswith(ENCODER_PREFIXES):
                return None
            return renamed
    return None


def to_ftcl_state(state: Mapping[str, torch.Tensor], checkpoint_format: str) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors under ftcl's names; ValueError for a key no ftcl tensor takes."""
    if checkpoint_format not in FORMATS:
        raise ValueError(f"unknown checkpoint format {checkpoint_format!r}; allowed: {', '.join(FORMATS)}")
    renamed, unused = {}, []
    for key, tensor in state.items():
        name = _renamed(key, checkpoint_format)
        (unused.append(key) if name is None else renamed.__setitem__(name, tensor))
    if unused:
        raise ValueError(f"{len(unused)} checkpoint tensor(s) have no place in the network: {', '.join(unused[:5])}"
                         f"{' ...' if len(unused) > 5 else ''}")
    return renamed


def config_from_state(state: Mapping[str, torch.Tensor]) -> TtyNetConfig:
    """The widths of the network a (renamed) state dict belongs to."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise ValueError(f"the checkpoint lacks {key!r}: it is no NetHack ScaledNet checkpoint")
        return tuple(state[key].shape)

    blocks = 0
    while f"screen_encoder.conv_net.{blocks}.0.weight" in state:
        blocks += 1
    h_dim = shape("core.weight_hh_l0")[1]
    num_actions = shape("policy.weight")[0]
    msg_hdim, status, after_cnn = shape("topline_encoder.msg_fwd.0.weight")[0], shape("bottomline_encoder.fwd_net.0.weight")[0], shape("screen_encoder.fc_head.0.weight")[0]
    crop_dim = shape("crop.width_grid")[0]
    encoded = msg_hdim + status + after_cnn + crop_dim ** 2 * 8
    fc_in = shape("fc.0.weight")[1]
    if fc_in not in (encoded, encoded + num_actions):
        raise ValueError(f"fc.0.weight takes {fc_in} inputs; the encoders give {encoded} (+{num_actions} with the previous action)")
    return TtyNetConfig(num_actions=num_actions, h_dim=h_dim, msg_hdim=msg_hdim, blstats_hdim=4 * status,
                        fc_after_cnn_hdim=after_cnn, char_edim=shape("screen_encoder.char_embeddings.weight")[1],
                        color_edim=shape("screen_encoder.color_embeddings.weight")[1], screen_conv_blocks=blocks,
                        screen_kernel_size=shape("screen_encoder.conv_net.0.0.weight")[-1], crop_dim=crop_dim,
                        use_prev_action=fc_in == encoded + num_actions,
                        normalize_returns="returns_normalizer.running_mean" in state)


def load_state_strictly(net: TtyLSTMNet, state: Mapping[str, torch.Tensor]) -> None:
    """Copy every tensor of `net` from `state`; ValueError naming what is missing, extra or misshapen."""
    own = net.state_dict()
    missing = [key for key in own if key not in state]
    extra = [key for key in state if key not in own]
    misshapen = [f"{key} {tuple(state[key].shape)} ≠ {tuple(own[key].shape)}" for key in own
                 if key in state and tuple(state[key].shape) != tuple(own[key].shape)]
    problems = [f"{what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                for what, keys in (("missing", missing), ("unexpected", extra), ("shape", misshapen)) if keys]
    if problems:
        raise ValueError("the checkpoint does not fit the network (" + "; ".join(problems) + ")")
    net.load_state_dict(dict(state), strict=True)


def load_paper_checkpoint(path: str | Path, checkpoint_format: str = "tuyls") -> TtyLSTMNet:
    """The network of a paper checkpoint file (module doc). The file is read with
    `weights_only=True` (no code runs); ValueError for a file that is none of the two formats."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} not found")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(f"checkpoint {path} is not a readable torch file of tensors ({str(error).splitlines()[0]})") from None
    if checkpoint_format == "tuyls":
        state = (loaded.get("learner_state") or {}).get("model") if isinstance(loaded, dict) else None
        where = '["learner_state"]["model"]'
    else:
        state = loaded.get("model") if isinstance(loaded, dict) else None
        where = '["model"]'
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"checkpoint {path} has no {where} state dict (format {checkpoint_format!r}; allowed: {', '.join(FORMATS)})")
    renamed = to_ftcl_state(state, checkpoint_format)
    net = TtyLSTMNet(config_from_state(renamed))
    load_state_strictly(net, renamed)
    return net
