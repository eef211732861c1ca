"""Knowledge-retention methods as plain PyTorch (no RLlib): one file per method.

`scratch.py finetune.py l2.py ewc.py bc.py ks.py em.py` each hold a method's config (a
`RetentionMethod`), its term (a `RetentionTerm`) and what it declares it needs; `registry.py`
collects them. Policies are reached only through `RetentionPolicyAPI` (policy_api.py).
Import the pieces from their modules, e.g. `from ftcl.retention.registry import parse_method`.
"""
