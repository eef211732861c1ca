"""Linear CKA of each hidden layer's representation against θ* over fine-tuning (paper Fig. 20).

For a layer with activations X (θ*) and Y (current θ) on the same n inputs, both centred over the
inputs (columns of zero mean), linear CKA is

    CKA(X, Y) = ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F · ‖Yᵀ Y‖_F)

which equals HSIC(K, L) / √(HSIC(K, K) · HSIC(L, L)) for the linear kernels K = XXᵀ, L = YYᵀ
(Kornblith et al. 2019). It is 1 for identical representations and invariant to orthogonal
transforms and isotropic scaling of either; computing it in feature space costs O(n·d²) per layer.

Networks (`find_networks`; a module's networks that it lacks are skipped):
- `actor`: SAC's `pi_encoder`, PPO's `encoder.actor_encoder` (or its shared `encoder`), fed s*;
- `critic`, `critic_twin`: SAC's `qf_encoder`, `qf_twin_encoder`, fed (s*, a*) as the Q-networks
  take them; PPO's `encoder.critic_encoder` (`critic`), fed s*.
A network's layers are its hidden layers in order: each block that starts at a Linear (or conv)
layer and ends before the next one; the block's last module's output (after LayerNorm and the
nonlinearity) is the layer's representation, `layer_0` the first. Metrics:
`analysis/cka/<network>/layer_<k>`.

The inputs are a fixed, evenly spaced subset of π*'s stored rows (≤ `MAX_CKA_ROWS`), θ*'s
activations are computed once (`CKAProbe`), and each evaluation runs one forward pass of the
current module per network on them.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

MAX_CKA_ROWS = 1_000
"""At most this many of π*'s stored rows are the CKA inputs (evenly spaced, deterministic)."""

ACTOR_ENCODERS = ("pi_encoder", "encoder.actor_encoder", "encoder")
"""Where a module's actor encoder lies, first match wins (SAC; PPO with separate or shared trunk)."""
CRITIC_ENCODERS = {"critic": ("qf_encoder", "encoder.critic_encoder"), "critic_twin": ("qf_twin_encoder",)}
LAYER_STARTS = (nn.Linear, nn.modules.conv._ConvNd)
PROBE_DTYPE = torch.float32
"""The evaluation-time products run in float32: ~3× faster than float64, CKA within ~1e-6 of it."""


def linear_cka(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """CKA(X, Y) with a linear kernel (module doc) for (n, d_x), (n, d_y) activations, in float64;
    NaN when either is constant over the inputs."""
    x, y = _centred(x), _centred(y)
    return _cka_of_centred(x, torch.linalg.matrix_norm(x.T @ x).item(), y)


def _centred(activations: np.ndarray | torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Columns of zero mean (the mean taken in float64), as `dtype`."""
    tensor = torch.as_tensor(activations).detach().to("cpu", torch.float64)
    tensor = tensor.reshape(len(tensor), -1)
    return (tensor - tensor.mean(dim=0, keepdim=True)).to(dtype)


def _cka_of_centred(x: torch.Tensor, x_gram_norm: float, y: torch.Tensor) -> float:
    """CKA of centred activations, ‖XᵀX‖_F given (it is θ*'s and computed once)."""
    denominator = x_gram_norm * torch.linalg.matrix_norm(y.T @ y).item()
    if not denominator > 0:
        return float("nan")
    return float(torch.linalg.matrix_norm(y.T @ x).item() ** 2 / denominator)


def _submodule(module: nn.Module, path: str) -> nn.Module | None:
    for name in path.split("."):
        module = getattr(module, name, None)
        if not isinstance(module, nn.Module):
            return None
    return module


def hidden_layer_outputs(encoder: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are the encoder's layer representations (module doc), in order."""
    blocks: list[list[nn.Module]] = []
    for leaf in (m for m in encoder.modules() if next(m.children(), None) is None):
        if isinstance(leaf, LAYER_STARTS):
            blocks.append([leaf])
        elif blocks:
            blocks[-1].append(leaf)
    return [block[-1] for block in blocks]


def find_networks(module: nn.Module) -> dict[str, list[nn.Module]]:
    """Network name -> the modules whose outputs are its layers, for the networks `module` has."""
    networks: dict[str, list[nn.Module]] = {}
    for name, paths in (("actor", ACTOR_ENCODERS), *CRITIC_ENCODERS.items()):
        for path in paths:
            encoder = _submodule(module, path)
            if encoder is not None and (layers := hidden_layer_outputs(encoder)):
                networks[name] = layers
                break
    return networks


def layer_activations(
    module: Any, observations: np.ndarray, actions: np.ndarray, networks: list[str] | None = None
) -> dict[str, list[np.ndarray]]:
    """Network -> its layers' activations (each (n, features), float32) on the inputs: s* for the
    actor (and PPO's critic), (s*, a*) for SAC's Q-networks. Only `networks` if given."""
    from ray.rllib.core.columns import Columns

    found = find_networks(module)
    wanted = {name: layers for name, layers in found.items() if networks is None or name in networks}
    if not wanted:
        return {}
    outputs: dict[tuple[str, int], torch.Tensor] = {}
    handles = []

    def keep(key: tuple[str, int]):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                outputs[key] = output.detach()
        return hook

    for name, layers in wanted.items():
        handles += [layer.register_forward_hook(keep((name, index))) for index, layer in enumerate(layers)]
    device = next(iter(module.parameters()), torch.zeros(())).device
    obs = torch.as_tensor(np.asarray(observations, dtype=np.float32), device=device)
    try:
        with torch.no_grad():
            if "actor" in wanted:
                module.forward_inference({Columns.OBS: obs})
            if "critic" in wanted or "critic_twin" in wanted:
                if _submodule(module, "qf_encoder") is not None:  # SAC: Q(s, a) of both critics
                    act = torch.as_tensor(np.asarray(actions, dtype=np.float32), device=device)
                    module.compute_q_values({Columns.OBS: obs, Columns.ACTIONS: act})
                else:  # PPO-family: V(s)
                    module.compute_values({Columns.OBS: obs})
    finally:
        for handle in handles:
            handle.remove()
    activations = {}
    for name, layers in wanted.items():
        captured = [outputs.get((name, index)) for index in range(len(layers))]
        if all(tensor is not None for tensor in captured):
            activations[name] = [t.reshape(len(t), -1).float().cpu().numpy() for t in captured]
    return activations


class CKAProbe:
    """θ*'s layer activations on fixed inputs, and the CKA of another module's against them."""

    def __init__(self, reference: Any, observations: np.ndarray, actions: np.ndarray) -> None:
        """`reference`: the θ* module (with critics); `observations`, `actions`: s*, a* rows."""
        self.observations = np.asarray(observations, dtype=np.float32)
        self.actions = np.asarray(actions, dtype=np.float32)
        self.reference: dict[str, list[tuple[torch.Tensor, float]]] = {}
        for name, layers in layer_activations(reference, self.observations, self.actions).items():
            centred = [_centred(x, PROBE_DTYPE) for x in layers]
            self.reference[name] = [(x, torch.linalg.matrix_norm(x.T @ x).item()) for x in centred]

    @property
    def networks(self) -> list[str]:
        return list(self.reference)

    def metrics(self, activations: dict[str, list[np.ndarray]]) -> dict[str, float]:
        """`analysis/cka/<network>/layer_<k>` of the current activations (`layer_activations` of
        the current module on `observations`, `actions`) against θ*'s."""
        metrics = {}
        for name, reference in self.reference.items():
            current = activations.get(name)
            if current is None or len(current) != len(reference):
                continue  # the module lacks the network, or it has another depth
            for index, ((x, x_gram_norm), y) in enumerate(zip(reference, current)):
                metrics[f"analysis/cka/{name}/layer_{index}"] = _cka_of_centred(x, x_gram_norm, _centred(y, PROBE_DTYPE))
        return metrics

    def metrics_of(self, module: Any) -> dict[str, float]:
        """`metrics` of a module in this process."""
        return self.metrics(layer_activations(module, self.observations, self.actions, self.networks))
