"""RLlib algorithms with knowledge retention (PPO, APPO, SAC), in RLlib's own layout.

`ALGORITHM_CONFIGS[name]()` is a normal RLlib config with one more method,
`.retention(method=..., pretrained_module_path=..., retention_data_path=...)`.
"""
from ftcl.algorithms.appo import RetentionAPPO, RetentionAPPOConfig, RetentionAPPOTorchLearner
from ftcl.algorithms.ppo import RetentionPPO, RetentionPPOConfig, RetentionPPOTorchLearner
from ftcl.algorithms.replay import ProtectedMemoryEpisodeReplayBuffer
from ftcl.algorithms.retention_learner import RETENTION_CONFIG_KEY, RetentionLearnerMixin
from ftcl.algorithms.sac import RetentionSAC, RetentionSACConfig, RetentionSACTorchLearner

ALGORITHM_CONFIGS = {
    "ppo": RetentionPPOConfig,
    "appo": RetentionAPPOConfig,
    "sac": RetentionSACConfig,
}

__all__ = [
    "ALGORITHM_CONFIGS",
    "ProtectedMemoryEpisodeReplayBuffer",
    "RETENTION_CONFIG_KEY",
    "RetentionAPPO",
    "RetentionAPPOConfig",
    "RetentionAPPOTorchLearner",
    "RetentionLearnerMixin",
    "RetentionPPO",
    "RetentionPPOConfig",
    "RetentionPPOTorchLearner",
    "RetentionSAC",
    "RetentionSACConfig",
    "RetentionSACTorchLearner",
]
