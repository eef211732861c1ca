"""The paper's NetHack network (π*'s: Tuyls et al.'s "ScaledNet" as the authors run it, paper B.1),
in plain PyTorch: a terminal encoder, an LSTM core, a policy and a baseline head.

Input per step: the terminal (`ftcl.envs.nethack` layout: (3, 24, 80) uint8 — characters,
colours, cursor mask) and the previous action (−1 at an episode's first step: no action).

    message   = row 0 as 80 one-hot characters → FC msg_hdim → ReLU → FC msg_hdim → ReLU
    status    = rows 22–23 as 160 characters, two channels ((c − 32)/96, and digits (c − 47)/10
                where c is one of "-./0…9") → Conv1d 32·8/4 → ELU → Conv1d 64·4/1 → ELU
                → FC blstats_hdim/4 → ELU → FC → ELU
    map       = rows 1–21: char and colour embeddings (char_edim, color_edim), concatenated →
                `screen_conv_blocks` × [Conv k×k → MaxPool 3/2 → 2 residual blocks of
                2 × (Conv k×k → BatchNorm → ELU)] (channels 16, 32, 32) → FC fc_after_cnn_hdim → ELU
    crop      = the 9×9 map cells around the cursor, embedded as the map → 5 × (Conv 3×3 →
                BatchNorm → ELU), channels 16, 16, 16, 16, 8
    h_t       = FC h_dim → ReLU → FC h_dim → ReLU on [message, status, map, one-hot a_{t−1}, crop]
    (x_t, c_t) = LSTM(h_t, state_{t−1}), the state zeroed where an episode starts
    π(·|s_t) = softmax(FC(x_t) → |A|), V(s_t) = FC(x_t) → 1  (with `normalize_returns`: V = σ·FC(x_t) + μ)

Sub-module names and shapes follow the authors' checkpoints (`topline_encoder`,
`bottomline_encoder`, `screen_encoder`, `crop`, `extract_crop_representation`, `fc`, `core`,
`policy`, `baseline`), so `ftcl.models.nethack_checkpoints` maps a paper checkpoint onto it one
tensor for one tensor. Widths are configurable: the paper's π* has h_dim = 1,738 (≈ 30M
parameters); a CPU run uses a few hundred.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ftcl.models.returns_normalizer import ReturnsNormalizer

ROWS, COLUMNS = 24, 80
MAP_ROWS = ROWS - 3  # the top line and the two status lines are not map


@dataclass(frozen=True)
class TtyNetConfig:
    num_actions: int = 121
    h_dim: int = 1738
    msg_hdim: int = 64
    blstats_hdim: int = 512
    fc_after_cnn_hdim: int = 512
    char_edim: int = 16
    color_edim: int = 16
    screen_conv_blocks: int = 2
    screen_kernel_size: int = 3
    crop_dim: int = 9
    use_prev_action: bool = True
    normalize_returns: bool = False
    """The baseline predicts normalised returns (the authors' learner): the net holds their running
    statistics (`returns_normalizer`, `ftcl.models.returns_normalizer`)."""


def _conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class TopLineEncoder(nn.Module):
    def __init__(self, msg_hdim: int):
        super().__init__()
        self.msg_fwd = nn.Sequential(nn.Linear(COLUMNS * 256, msg_hdim), nn.ReLU(), nn.Linear(msg_hdim, msg_hdim), nn.ReLU())

    def forward(self, line: torch.Tensor) -> torch.Tensor:  # (N, 80) character codes
        return self.msg_fwd(F.one_hot(line.long(), 256).flatten(1).float())


class BottomLinesEncoder(nn.Module):
    def __init__(self, h_dim: int):
        super().__init__()
        self.conv_net = nn.Sequential(nn.Conv1d(2, 32, 8, stride=4), nn.ELU(), nn.Conv1d(32, 64, 4, stride=1), nn.ELU())
        width = _conv_out(_conv_out(2 * COLUMNS, 8, 4), 4, 1)
        self.fwd_net = nn.Sequential(nn.Linear(64 * width, h_dim), nn.ELU(), nn.Linear(h_dim, h_dim), nn.ELU())
        self.h_dim = h_dim

    def forward(self, lines: torch.Tensor) -> torch.Tensor:  # (N, 160) character codes
        codes = lines.float()
        digits = ((codes > 44) & (codes < 58)).float() * (codes - 47) / 10
        return self.fwd_net(self.conv_net(torch.stack([(codes - 32) / 96, digits], dim=1)).flatten(1))


class RunningStatsBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with its running statistics (as `eval()` does), in train mode too.

    Behaviour policy (EnvRunners, a step at a time), learner, frozen teacher and APPO's old policy
    then compute the same function of the same weights, which v-trace's importance ratios and the
    KL terms presuppose; batch statistics would make each depend on its batch. The statistics come
    with the weights (a paper checkpoint's, or the initial 0 and 1) and are not updated; the
    checkpoint keys are BatchNorm's own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class ResBlock(nn.Module):
    def __init__(self, channels: int, kernel: int, layers: int = 2):
        super().__init__()
        self.net = nn.Sequential(*[module for _ in range(layers) for module in
                                   (nn.Conv2d(channels, channels, kernel, padding=kernel // 2),
                                    RunningStatsBatchNorm2d(channels), nn.ELU())])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + x


class ScreenEncoder(nn.Module):
    """Map characters and colours: embeddings → IMPALA-style residual CNN → FC (module doc)."""

    def __init__(self, config: TtyNetConfig):
        super().__init__()
        self.char_embeddings = nn.Embedding(256, config.char_edim)
        self.color_embeddings = nn.Embedding(128, config.color_edim)
        kernel, height, width = config.screen_kernel_size, MAP_ROWS, COLUMNS
        channels = [config.char_edim + config.color_edim, 16, 32, 32][: config.screen_conv_blocks + 1]
        blocks = []
        for in_channels, out_channels in zip(channels, channels[1:]):
            blocks.append(nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2), nn.MaxPool2d(3, 2),
                                        ResBlock(out_channels, kernel), ResBlock(out_channels, kernel)))
            height, width = _conv_out(height, 3, 2), _conv_out(width, 3, 2)
        self.conv_net = nn.Sequential(*blocks)
        self.fc_head = nn.Sequential(nn.Linear(height * width * channels[-1], config.fc_after_cnn_hdim), nn.ELU())

    def embed(self, chars: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
        """(N, H, W) codes -> (N, char_edim + color_edim, H, W)."""
        return torch.cat([self.char_embeddings(chars.long()), self.color_embeddings(colors.long())], dim=-1).permute(0, 3, 1, 2)

    def forward(self, chars: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
        return self.fc_head(self.conv_net(self.embed(chars, colors)).flatten(1))


class Crop(nn.Module):
    """The `size`×`size` cells of a (N, H, W) map centred on each (row, column), zero outside."""

    def __init__(self, height: int, width: int, size: int):
        super().__init__()
        self.height, self.width, self.size = height, width, size
        offsets = torch.arange(-(size // 2), size - size // 2)
        # the authors' crop keeps its sampling grid as buffers (normalised offsets): kept for checkpoint parity
        self.register_buffer("width_grid", (offsets * 2 / (width - 1)).float()[None, :].expand(size, -1).clone())
        self.register_buffer("height_grid", (offsets * 2 / (height - 1)).float()[:, None].expand(-1, size).clone())
        self.register_buffer("offsets", offsets, persistent=False)

    def forward(self, grid: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        r = rows.long()[:, None] + self.offsets[None, :]
        c = columns.long()[:, None] + self.offsets[None, :]
        inside = ((r >= 0) & (r < self.height))[:, :, None] & ((c >= 0) & (c < self.width))[:, None, :]
        picked = grid[torch.arange(grid.shape[0], device=grid.device)[:, None, None],
                      r.clamp(0, self.height - 1)[:, :, None], c.clamp(0, self.width - 1)[:, None, :]]
        return picked * inside


class TtyLSTMNet(nn.Module):
    """Encoder, LSTM core, policy and baseline (module doc)."""

    def __init__(self, config: TtyNetConfig = TtyNetConfig()):
        super().__init__()
        self.config = config
        self.topline_encoder = TopLineEncoder(config.msg_hdim)
        self.bottomline_encoder = BottomLinesEncoder(config.blstats_hdim // 4)
        self.screen_encoder = ScreenEncoder(config)
        self.crop = Crop(MAP_ROWS, COLUMNS, config.crop_dim)
        edim, layers = config.char_edim + config.color_edim, []
        for in_channels, out_channels in zip([edim, 16, 16, 16, 16], [16, 16, 16, 16, 8]):
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), RunningStatsBatchNorm2d(out_channels), nn.ELU()]
        self.extract_crop_representation = nn.Sequential(*layers)
        encoded = (config.msg_hdim + self.bottomline_encoder.h_dim + config.fc_after_cnn_hdim
                   + (config.num_actions if config.use_prev_action else 0) + config.crop_dim ** 2 * 8)
        self.fc = nn.Sequential(nn.Linear(encoded, config.h_dim), nn.ReLU(), nn.Linear(config.h_dim, config.h_dim), nn.ReLU())
        self.core = nn.LSTM(config.h_dim, config.h_dim, num_layers=1)
        self.policy = nn.Linear(config.h_dim, config.num_actions)
        self.baseline = nn.Linear(config.h_dim, 1)
        if config.normalize_returns:
            self.returns_normalizer = ReturnsNormalizer()

    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(1, batch, self.config.h_dim, device=self.policy.weight.device)
        return zeros, zeros.clone()

    def encode(self, obs: torch.Tensor, prev_actions: torch.Tensor) -> torch.Tensor:
        """(N, 3, 24, 80) terminals and (N,) previous actions (−1: none) -> (N, h_dim)."""
        chars, colors, cursor = obs[:, 0], obs[:, 1], obs[:, 2]
        map_chars, map_colors = chars[:, 1:1 + MAP_ROWS], colors[:, 1:1 + MAP_ROWS]
        parts = [self.topline_encoder(chars[:, 0]), self.bottomline_encoder(chars[:, -2:].flatten(1)),
                 self.screen_encoder(map_chars, map_colors)]
        if self.config.use_prev_action:
            actions = prev_actions.long()
            parts.append(F.one_hot(actions.clamp(min=0), self.config.num_actions).float() * (actions >= 0)[:, None])
        where = cursor.flatten(1).float().argmax(1)  # the cursor mask's cell; on row 0 (a prompt) it crops row −1
        rows, columns = where // COLUMNS - 1, where % COLUMNS
        embedded = self.screen_encoder.embed(self.crop(map_chars, rows, columns), self.crop(map_colors, rows, columns))
        parts.append(self.extract_crop_representation(embedded).flatten(1))
        return self.fc(torch.cat(parts, dim=1))

    def core_outputs(self, obs: torch.Tensor, prev_actions: torch.Tensor, is_first: torch.Tensor | None,
                     state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """(B, T, 3, 24, 80), (B, T), (B, T) bool or None, state ((1, B, h), (1, B, h)) -> the LSTM's
        outputs x_t (B, T, h) and its state after the last step. Where `is_first` marks a step that
        starts an episode, the state is zeroed before it (stepwise); None: no episode starts inside
        the sequences (RLlib's), so the LSTM runs over them in one call."""
        batch, steps = obs.shape[:2]
        features = self.encode(obs.flatten(0, 1), prev_actions.flatten(0, 1)).view(batch, steps, -1)
        h, c = state
        if is_first is None or not bool(is_first[:, 1:].any()):
            if is_first is not None:
                keep = (~is_first[:, 0]).float()[None, :, None]
                h, c = h * keep, c * keep
            core, (h, c) = self.core(features.transpose(0, 1), (h, c))
            return core.transpose(0, 1), (h, c)
        outputs = []
        for t in range(steps):
            keep = (~is_first[:, t]).float()[None, :, None]
            out, (h, c) = self.core(features[:, t][None], (h * keep, c * keep))
            outputs.append(out[0])
        return torch.stack(outputs, dim=1), (h, c)

    def forward(self, obs: torch.Tensor, prev_actions: torch.Tensor, is_first: torch.Tensor | None,
                state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """As `core_outputs`, then the heads: logits (B, T, |A|), values (B, T), the state after the last step."""
        core, state = self.core_outputs(obs, prev_actions, is_first, state)
        return self.policy(core), self.baseline(core).squeeze(-1), state


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
