"""A value head's scale: the running statistics of the returns it is trained on (PPO/APPO's
"normalised returns", the authors' sample-factory learner, paper §4.1). Part of the module's state,
so π* carries it and a fine-tuning run reads π*'s values on π*'s scale."""
from __future__ import annotations

import torch


class ReturnsNormalizer(torch.nn.Module):
    """Running mean and variance of the value targets (float64 buffers, part of the module's state).

    The value head predicts (G − μ)/σ; `denormalize` maps its outputs back to returns, `update`
    folds in a batch of targets (the parallel-variance formula), `normalize` maps returns to the
    head's scale. Both directions clip the normalised value at ±`clip` (5, as sample-factory, whose
    buffer names `running_mean`, `running_var`, `count` these are, so its checkpoints load)."""

    def __init__(self, epsilon: float = 1e-5, clip: float = 5.0):
        super().__init__()
        self.epsilon, self.clip = epsilon, clip
        self.register_buffer("running_mean", torch.zeros(1, dtype=torch.float64))
        self.register_buffer("running_var", torch.ones(1, dtype=torch.float64))
        self.register_buffer("count", torch.ones(1, dtype=torch.float64))

    def _std(self) -> torch.Tensor:
        return torch.sqrt(self.running_var.float() + self.epsilon)

    def denormalize(self, normalized: torch.Tensor) -> torch.Tensor:
        return normalized.clamp(-self.clip, self.clip) * self._std() + self.running_mean.float()

    def normalize(self, returns: torch.Tensor) -> torch.Tensor:
        return ((returns - self.running_mean.float()) / self._std()).clamp(-self.clip, self.clip)

    @torch.no_grad()
    def update(self, returns: torch.Tensor) -> None:
        returns = returns.detach().double().flatten()
        if returns.numel() < 2:
            return
        batch_mean, batch_var, batch_count = returns.mean(), returns.var(), returns.numel()
        delta, total = batch_mean - self.running_mean, self.count + batch_count
        squares = self.running_var * self.count + batch_var * batch_count + delta ** 2 * self.count * batch_count / total
        self.running_mean += delta * batch_count / total
        self.running_var.copy_(squares / total)
        self.count.copy_(total)
