"""PPO + RND (Burda et al. 2019, as jcwleo's code that the paper's Montezuma agent uses) on RLlib's new stack.

RLlib 2.60 ships no RND; this follows its intrinsic-curiosity example's pattern (a learner
connector computes intrinsic rewards on the train batch; the learner adds the model's own loss),
with one module (`ftcl.models.rnd_cnn.RNDPolicyModule`) that holds policy, both value heads and RND.

Per train batch, the `RNDAdvantages` connector (in place of RLlib's GAE piece):
  1. e(s_t) = ½‖f̂(s_t) − f(s_t)‖² for every row with the current statistics; the intrinsic reward
     of step t is the novelty of what it led to, r_int_t = e(s_{t+1}) (RLlib's episode layout ends
     each episode chunk with the final observation, so s_{t+1} is the next row);
  2. the per-pixel statistics of RND's input absorb the batch's last frames (after step 1, as jcwleo);
  3. R_t = γ_int·R_{t−1} + r_int_t, the running discounted intrinsic return, carried from chunk to
     chunk of an episode; its running variance σ²_R absorbs the batch; r_int ← r_int / σ_R;
  4. two GAEs (λ = `lambda_`): A_ext with γ = `gamma` (0.999) and the episode's terminations on the
     game's rewards clipped to [−`ext_reward_clip`, +`ext_reward_clip`] (jcwleo clips to [−1, 1];
     None: unclipped), and
     A_int with γ = `gamma_int` (0.99) and no terminations (the intrinsic stream is non-episodic:
     at an episode's end it bootstraps from V_int of the final observation) — unless
     `intrinsic_ends_at_termination`: then a terminated episode's last step earns no intrinsic
     reward and V_int does not bootstrap past it. For episodes that the experiment ends (an env's
     `end_on_room_exit`), the final frame is one the agent never goes on from: with the default,
     leaving the room pays the next room's novelty and V_int there, a reward for leaving;
  5. A = ext_coef·A_ext + int_coef·A_int (2 and 1), not standardised (jcwleo's UseNorm = False);
     value targets for V_ext and V_int.
The loss is RLlib's clipped PPO surrogate on A, with `vf_loss_coeff`·(V_ext − target)² (set
`vf_clip_param` large: jcwleo does not clip), plus `vf_loss_coeff`·(V_int − target_int)² and the RND
predictor's loss mean e(s) over a random `rnd_update_proportion` (25 %) of the batch's valid rows.
Retention terms (`RetentionLearnerMixin`) act on the actor only: trunk and π, never the value
heads or RND (see the module's `RetentionPolicyAPI`).

Before the first update of a trial that does not start from π*, `RetentionPPORND.setup` sets the
statistics of RND's input from `rnd_obs_norm_steps` random-action steps of the env (jcwleo:
ObsNormStep 50 × NumStep 128 per env); a trial that starts from π* keeps π*'s statistics, RND
target and predictor (they are part of the whole agent).

Differences from jcwleo, by RLlib's design: the discounted intrinsic return restarts at 0 with a new
episode (jcwleo carries it along each env's stream across episodes), and the minibatches are
RLlib's (`minibatch_size`), not jcwleo's 4 per batch unless the spec says so.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.connectors.common.numpy_to_tensor import NumpyToTensor
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets

from ftcl.algorithms.ppo import RetentionPPO, RetentionPPOConfig, RetentionPPOTorchLearner
from ftcl.models.rnd_cnn import INTRINSIC_VALUES, RNDPolicyModule

INTRINSIC_VALUE_TARGETS = "value_targets_intrinsic"
INTRINSIC_REWARDS = Columns.INTRINSIC_REWARDS


def discounted_running_returns(rewards: np.ndarray, gamma: float, start: float = 0.0) -> np.ndarray:
    """R_t = γ·R_{t−1} + r_t with R_{−1} = `start` (jcwleo's RewardForwardFilter)."""
    returns = np.empty(len(rewards), np.float64)
    running = start
    for t, reward in enumerate(rewards):
        running = gamma * running + float(reward)
        returns[t] = running
    return returns


def gae_targets(values: np.ndarray, rewards: np.ndarray, terminateds: np.ndarray, truncateds: np.ndarray,
                gamma: float, lambda_: float) -> tuple[np.ndarray, np.ndarray]:
    """(advantages, value targets) of RLlib's GAE over a batch in RLlib's episode layout."""
    targets = compute_value_targets(values=values, rewards=rewards, terminateds=terminateds, truncateds=truncateds,
                                    gamma=gamma, lambda_=lambda_)
    return targets - values, targets


class RNDAdvantages(ConnectorV2):
    """Intrinsic rewards, their normalisation and the two-stream GAE (module doc, steps 1-5)."""

    def __init__(self, input_observation_space=None, input_action_space=None, *, gamma: float, gamma_int: float,
                 lambda_: float, ext_coef: float, int_coef: float, ext_reward_clip: float | None = None,
                 intrinsic_ends_at_termination: bool = False, **kwargs):
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.gamma, self.gamma_int, self.lambda_ = gamma, gamma_int, lambda_
        self.ext_reward_clip = ext_reward_clip
        self.intrinsic_ends_at_termination = intrinsic_ends_at_termination
        self.ext_coef, self.int_coef = ext_coef, int_coef
        self._running_return: dict[str, float] = {}
        """Per episode (RLlib's id, without the per-batch suffix): R_t at the end of its last chunk."""
        self._to_tensor = None

    def __call__(self, *, rl_module, episodes, batch: dict[str, Any], **kwargs):
        module: RNDPolicyModule = rl_module[DEFAULT_MODULE_ID].unwrapped()
        if module.is_stateful():
            raise ValueError("RNDAdvantages needs a feed-forward module")
        rows = batch[DEFAULT_MODULE_ID]
        observations = rows[Columns.OBS]
        episodes_here = list(self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False))
        lengths = [len(episode) for episode in episodes_here]  # each includes the appended final observation
        with torch.no_grad():
            novelty = module.novelty(observations).cpu().numpy().astype(np.float64)
            values_ext, values_int = (v.cpu().numpy() for v in module.compute_both_values(observations))
        module.update_observation_statistics(observations[..., -1].cpu().numpy())

        rewards_int, returns_int = np.zeros_like(novelty), np.zeros_like(novelty)
        finished: set[str] = set()
        start = 0
        for episode, length in zip(episodes_here, lengths):
            end = start + length
            key = str(episode.id_).split("_")[0]
            rewards_int[start:end - 1] = novelty[start + 1:end]  # r_int_t = e(s_{t+1}); the last row is padding
            if self.intrinsic_ends_at_termination and episode.is_terminated and length > 1:
                rewards_int[end - 2] = 0.0  # the final frame is never gone on from
            returns_int[start:end - 1] = discounted_running_returns(rewards_int[start:end - 1], self.gamma_int,
                                                                    self._running_return.get(key, 0.0))
            self._running_return[key] = float(returns_int[end - 2]) if length > 1 else self._running_return.get(key, 0.0)
            if episode.is_done:
                finished.add(key)
            start = end
        if start != len(novelty):
            raise ValueError(f"RNDAdvantages: {len(novelty)} rows, but the episodes hold {start}")
        for key in finished:
            self._running_return.pop(key, None)
        valid = rows[Columns.LOSS_MASK].cpu().numpy().astype(bool)
        return_std = module.update_intrinsic_return_statistics(returns_int[valid])
        rewards_int = rewards_int / max(return_std, 1e-8)

        terminateds = rows[Columns.TERMINATEDS].cpu().numpy().astype(np.float32)
        truncateds = rows[Columns.TRUNCATEDS].cpu().numpy().astype(np.float32)
        rewards = rows[Columns.REWARDS].cpu().numpy().astype(np.float32)
        if self.ext_reward_clip is not None:
            rewards = np.clip(rewards, -self.ext_reward_clip, self.ext_reward_clip)
        advantages_ext, targets_ext = gae_targets(values_ext, rewards, terminateds, truncateds, self.gamma, self.lambda_)
        # the intrinsic stream: a terminated episode's end is a chunk boundary that bootstraps V_int
        # (non-episodic), or with `intrinsic_ends_at_termination` an end
        ends = terminateds if self.intrinsic_ends_at_termination else np.zeros_like(terminateds)
        advantages_int, targets_int = gae_targets(values_int, rewards_int.astype(np.float32), ends,
                                                  np.maximum(truncateds, terminateds), self.gamma_int, self.lambda_)
        results = {
            Postprocessing.ADVANTAGES: (self.ext_coef * advantages_ext + self.int_coef * advantages_int).astype(np.float32),
            Postprocessing.VALUE_TARGETS: targets_ext.astype(np.float32),
            INTRINSIC_VALUE_TARGETS: targets_int.astype(np.float32),
            INTRINSIC_REWARDS: rewards_int.astype(np.float32),
        }
        if self._to_tensor is None:
            self._to_tensor = NumpyToTensor(as_learner_connector=True, device=observations.device)
        tensors = self._to_tensor(rl_module=rl_module, batch={DEFAULT_MODULE_ID: results}, episodes=episodes)
        rows.update(tensors[DEFAULT_MODULE_ID])
        return batch


class RetentionPPORNDTorchLearner(RetentionPPOTorchLearner):
    """RetentionPPO's learner with RND: the connector above and the two extra losses (module doc)."""

    def build(self) -> None:
        super().build()
        config = self.config
        if self._learner_connector is not None and config.add_default_connectors_to_learner_pipeline:
            self._learner_connector.remove("GeneralAdvantageEstimation")
            self._learner_connector.append(RNDAdvantages(
                gamma=config.gamma, gamma_int=config.gamma_int, lambda_=config.lambda_,
                ext_coef=config.ext_coef, int_coef=config.int_coef, ext_reward_clip=config.ext_reward_clip,
                intrinsic_ends_at_termination=config.intrinsic_ends_at_termination))
        self._rnd_update_proportion = float(config.rnd_update_proportion)
        self._rnd_generator = torch.Generator(device="cpu").manual_seed(int(config.seed or 0))

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        loss = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
        if module_id != DEFAULT_MODULE_ID:
            return loss
        module: RNDPolicyModule = self.module[module_id].unwrapped()
        valid = batch[Columns.LOSS_MASK].bool() if Columns.LOSS_MASK in batch else torch.ones_like(
            fwd_out[INTRINSIC_VALUES], dtype=torch.bool)
        value_loss_int = (fwd_out[INTRINSIC_VALUES] - batch[INTRINSIC_VALUE_TARGETS]).pow(2)[valid].mean()
        # RND predictor: a random `rnd_update_proportion` of the valid rows (jcwleo's UpdateProportion)
        chosen = valid & (torch.rand(valid.shape, generator=self._rnd_generator).to(valid.device) < self._rnd_update_proportion)
        rnd_loss = module.novelty(batch[Columns.OBS][chosen]).mean() if chosen.any() else loss.new_zeros(())
        self.metrics.log_dict({"vf_loss_intrinsic": value_loss_int, "rnd_loss": rnd_loss,
                               "intrinsic_reward_mean": batch[INTRINSIC_REWARDS][valid].mean()},
                              key=module_id, window=1)
        return loss + config.vf_loss_coeff * value_loss_int + rnd_loss


RND_DEFAULTS = {"ext_coef": 2.0, "int_coef": 1.0, "gamma_int": 0.99, "rnd_update_proportion": 0.25,
                "rnd_obs_norm_steps": 50 * 128, "ext_reward_clip": 1.0, "intrinsic_ends_at_termination": False}
"""jcwleo's values (paper Table 2: ExtCoef, IntCoef, IntGamma, UpdateProportion, ObsNormStep × NumStep;
its train.py clips the game's rewards to [−1, 1])."""


class RetentionPPORNDConfig(RetentionPPOConfig):
    """RetentionPPOConfig with RND: `.training(ext_coef=, int_coef=, gamma_int=, rnd_update_proportion=,
    rnd_obs_norm_steps=, ext_reward_clip=, intrinsic_ends_at_termination=)` besides PPO's keywords; the module is `RNDPolicyModule` unless set."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or RetentionPPORND)
        self.ext_coef = RND_DEFAULTS["ext_coef"]
        self.int_coef = RND_DEFAULTS["int_coef"]
        self.gamma_int = RND_DEFAULTS["gamma_int"]
        self.rnd_update_proportion = RND_DEFAULTS["rnd_update_proportion"]
        self.rnd_obs_norm_steps = RND_DEFAULTS["rnd_obs_norm_steps"]
        self.ext_reward_clip = RND_DEFAULTS["ext_reward_clip"]
        self.intrinsic_ends_at_termination = RND_DEFAULTS["intrinsic_ends_at_termination"]

    def training(self, *, ext_coef: float = NotProvided, int_coef: float = NotProvided, gamma_int: float = NotProvided,
                 rnd_update_proportion: float = NotProvided, rnd_obs_norm_steps: int = NotProvided,
                 ext_reward_clip: float | None = NotProvided, intrinsic_ends_at_termination: bool = NotProvided,
                 **kwargs):
        super().training(**kwargs)
        given = {"ext_coef": ext_coef, "int_coef": int_coef, "gamma_int": gamma_int,
                 "rnd_update_proportion": rnd_update_proportion, "rnd_obs_norm_steps": rnd_obs_norm_steps,
                 "ext_reward_clip": ext_reward_clip, "intrinsic_ends_at_termination": intrinsic_ends_at_termination}
        for key, value in given.items():
            if value is not NotProvided:
                setattr(self, key, value)
        return self

    def validate(self) -> None:
        super().validate()
        for key in ("ext_coef", "int_coef"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"{key} must be >= 0 (got {getattr(self, key)!r})")
        clip = self.ext_reward_clip
        if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0):
            raise ValueError(f"ext_reward_clip must be a number > 0 or null (got {clip!r})")
        if not isinstance(self.intrinsic_ends_at_termination, bool):
            raise ValueError(f"intrinsic_ends_at_termination must be true or false (got {self.intrinsic_ends_at_termination!r})")
        if not 0 <= self.gamma_int <= 1:
            raise ValueError(f"gamma_int must be in [0, 1] (got {self.gamma_int!r})")
        if not 0 < self.rnd_update_proportion <= 1:
            raise ValueError(f"rnd_update_proportion must be in (0, 1] (got {self.rnd_update_proportion!r})")
        if isinstance(self.rnd_obs_norm_steps, bool) or not isinstance(self.rnd_obs_norm_steps, int) \
                or self.rnd_obs_norm_steps < 0:
            raise ValueError(f"rnd_obs_norm_steps must be an integer >= 0 (got {self.rnd_obs_norm_steps!r})")

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=RNDPolicyModule)

    def get_default_learner_class(self) -> type:
        if self.framework_str != "torch":
            raise ValueError("ftcl retention learners are torch only; set framework='torch'")
        return RetentionPPORNDTorchLearner


def random_action_frames(config: Any, steps: int, seed: int) -> np.ndarray:
    """The last frame of `steps` observations of one env of `config` under uniformly random actions."""
    from ray.tune.registry import ENV_CREATOR, _global_registry

    creator = _global_registry.get(ENV_CREATOR, config.env) if isinstance(config.env, str) else None
    if creator is None:
        raise ValueError(f"PPO + RND needs a registered env to initialise its statistics; {config.env!r} is not")
    env = creator(dict(config.env_config or {}))
    try:
        env.action_space.seed(seed)
        observation, _ = env.reset(seed=seed)
        frames = []
        for _ in range(steps):
            observation, _, terminated, truncated, _ = env.step(env.action_space.sample())
            frames.append(np.asarray(observation)[..., -1])
            if terminated or truncated:
                observation, _ = env.reset()
        return np.stack(frames)
    finally:
        env.close()


class RetentionPPORND(RetentionPPO):
    """RetentionPPO with RND; a trial that starts without π* sets RND's input statistics from random steps."""

    @classmethod
    def get_default_config(cls) -> RetentionPPORNDConfig:
        return RetentionPPORNDConfig()

    def setup(self, config: Any) -> None:
        super().setup(config)
        from ftcl.algorithms.retention_algorithm import retention_settings_of

        settings = retention_settings_of(self.config)
        loaded_pi_star = settings is not None and settings.method.starts_from_pretrained
        steps = int(self.config.rnd_obs_norm_steps)
        if loaded_pi_star or steps == 0:
            return
        frames = random_action_frames(self.config, steps, int(self.config.seed or 0))
        results = self.learner_group.foreach_learner(
            lambda learner, _f=frames: learner.module[DEFAULT_MODULE_ID].unwrapped().set_observation_statistics(_f))
        for result in results:
            if not result.ok:
                raise RuntimeError(f"setting RND's statistics failed: {result.get()}")
