"""Knowledge-retention methods as plain PyTorch terms (no RLlib): L2, EWC, BC, KS, EM memory.

`build_term(method_config)` turns a method config into a term; the RLlib learners in
`ftcl.algorithms` prepare it with π*/θ* after the pre-trained weights are loaded and add its
loss to the actor's objective.
"""
from ftcl.retention.base import PolicyHandle, RetentionTerm, TermInputs
from ftcl.retention.bc import BCTerm
from ftcl.retention.distributions import kl_divergence, retention_kl
from ftcl.retention.ewc import EWCTerm, categorical_policy_fisher, gaussian_policy_fisher
from ftcl.retention.factory import build_term, parse_method
from ftcl.retention.freezing import FreezeWindowRule, TrainingGate
from ftcl.retention.ks import KSTerm
from ftcl.retention.l2 import L2Term
from ftcl.retention.memory import ProtectedReplayMemory, split_sample_counts

__all__ = [
    "BCTerm",
    "EWCTerm",
    "FreezeWindowRule",
    "KSTerm",
    "L2Term",
    "PolicyHandle",
    "ProtectedReplayMemory",
    "RetentionTerm",
    "TermInputs",
    "TrainingGate",
    "build_term",
    "categorical_policy_fisher",
    "gaussian_policy_fisher",
    "kl_divergence",
    "parse_method",
    "retention_kl",
    "split_sample_counts",
]
