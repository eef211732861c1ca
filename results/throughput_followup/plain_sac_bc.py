"""Plain-PyTorch SAC update (ftcl.bench.PlainSAC) with and without λ·BC on 128 buffer states.

The inherent cost of the BC term on the paper's 4×256 actor, interleaved; a fused variant runs the
actor once on [batch obs; BC states]. Usage: python plain_sac_bc.py
"""
import statistics, time, os
import numpy as np, torch
from ftcl.bench import PlainSAC, random_sac_batch
from ftcl.retention.distributions import retention_kl
torch.set_num_threads(1)
OBS, ACT = 39, 4
class PlainSACBC(PlainSAC):
    def __init__(self, fused):
        super().__init__(OBS, ACT); self.fused = fused
        g = torch.Generator().manual_seed(0)
        self.buffer = torch.randn(2048, OBS, generator=g); self.labels = torch.randn(2048, 2 * ACT, generator=g) * 0.1
        self.gen = torch.Generator().manual_seed(1)
    def policy(self, observations):
        if not getattr(self, "_inject", False):
            return super().policy(observations)
        self._inject = False
        idx = torch.randint(2048, (128,), generator=self.gen)
        if self.fused:
            out = self.actor(torch.cat([observations, self.buffer[idx]]))
            own, bc_inputs = out[:len(observations)], out[len(observations):]
        else:
            own = self.actor(observations); bc_inputs = self.actor(self.buffer[idx])
        self._bc = retention_kl(self.labels[idx], bc_inputs, "diag_gaussian").mean()
        mean, log_std = own.chunk(2, dim=-1)
        std = log_std.clamp(-20.0, 2.0).exp()
        pre_tanh = mean + std * torch.randn_like(mean)
        action = torch.tanh(pre_tanh)
        normal_logp = (-0.5 * ((pre_tanh - mean) / std) ** 2 - std.log() - 0.5 * np.log(2 * np.pi)).sum(-1)
        return action, normal_logp - torch.log(1 - action.pow(2) + 1e-6).sum(-1)
    def update(self, batch, gamma=0.99, tau=0.005):
        # same as PlainSAC.update with λ·BC added to the actor loss
        obs, actions, rewards, next_obs, dones = (batch[k] for k in ("obs", "actions", "rewards", "next_obs", "dones"))
        alpha = self.log_alpha.exp()
        q1 = self.q1(torch.cat([obs, actions], -1)).squeeze(-1); q2 = self.q2(torch.cat([obs, actions], -1)).squeeze(-1)
        self._inject = True
        action_new, logp = self.policy(obs)
        with torch.no_grad():
            next_action, next_logp = self.policy(next_obs)
            ni = torch.cat([next_obs, next_action], -1)
            target = rewards + gamma * (1.0 - dones) * (torch.min(self.q1_target(ni), self.q2_target(ni)).squeeze(-1) - alpha * next_logp)
        for p in self.critic_parameters: p.requires_grad_(False)
        new_input = torch.cat([obs, action_new], -1)
        q_new = torch.min(self.q1(new_input), self.q2(new_input)).squeeze(-1)
        for p in self.critic_parameters: p.requires_grad_(True)
        losses = [torch.nn.functional.huber_loss(q1, target), torch.nn.functional.huber_loss(q2, target),
                  (alpha.detach() * logp - q_new).mean() + 1.0 * self._bc,
                  -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()]
        for o, l in zip(self.optimizers, losses):
            o.zero_grad(set_to_none=True); l.backward(retain_graph=True)
        for o in self.optimizers: o.step()
        with torch.no_grad(): torch._foreach_lerp_(self.target_pairs[1], self.target_pairs[0], tau)
agents = {"plain finetune": PlainSAC(OBS, ACT), "plain + bc (separate fwd)": PlainSACBC(False), "plain + bc (fused fwd)": PlainSACBC(True)}
gen = np.random.default_rng(0); batches = [random_sac_batch(OBS, ACT, 128, gen) for _ in range(20)]
times = {k: [] for k in agents}
print("load before", os.getloadavg())
for r in range(11):
    for k, a in agents.items():
        s = time.perf_counter()
        for b in batches: a.update(b)
        times[k].append((time.perf_counter() - s) / len(batches) * 1000)
base = statistics.median(times["plain finetune"])
for k, v in times.items():
    m = statistics.median(v); print(f"{k}: {m:.2f} ms/update  (+{100*(m/base-1):.1f} %)")
print("load after", os.getloadavg())
