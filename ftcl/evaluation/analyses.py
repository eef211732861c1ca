"""What a fine-tuning trial measures on π*'s stored states at each evaluation, besides its suites.

- Fig. 8 (`evaluation.log_likelihood_suites`): per suite, log π_θ(a*|s*) on π*'s stored rows of
  the suite — the mean and quantiles as metrics (`ftcl.evaluation.likelihood`), every state's
  value in the trial's `StateRecord` (`ftcl.evaluation.state_records`, the report's figure);
- Fig. 20 (`evaluation.cka`): linear CKA of every hidden layer of actor and critics against θ*
  (`ftcl.evaluation.cka`), θ* read from π*'s checkpoint once, on ≤ `MAX_CKA_ROWS` of its rows.

Both read the spec's π* (every fine-tuning trial, scratch included: its curve is the baseline).
The policy's log-likelihood is that of the module the env runners act with; CKA needs the
critics, so the current activations come from the learner's module (`current_activations`).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ftcl.evaluation.cka import MAX_CKA_ROWS, CKAProbe
from ftcl.evaluation.likelihood import log_likelihood_metrics, select_rows, stored_action_log_likelihoods
from ftcl.evaluation.state_records import StateRecord, read_state_record

Activations = Callable[[np.ndarray, np.ndarray, list[str]], dict[str, list[np.ndarray]]]
"""(s*, a*, networks) -> the current module's layer activations (`cka.layer_activations`)."""


class FineTuningAnalyses:
    """The Fig. 8 and Fig. 20 analyses of one fine-tuning trial (module doc); π*'s files are read
    at the first evaluation."""

    def __init__(
        self,
        *,
        env_name: str,
        env_options: dict[str, Any],
        log_likelihood_suites: list[str],
        cka: bool,
        module_path: str | Path | None,
        data_path: str | Path | None,
        label: str = "trial",
    ) -> None:
        self.env_name = env_name
        self.env_options = env_options
        self.log_likelihood_suites = list(log_likelihood_suites)
        self.cka = cka
        self.module_path = module_path
        self.data_path = data_path
        self.label = label
        self.expert_rows: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self.record: StateRecord | None = None
        self.cka_probe: CKAProbe | None = None

    @property
    def active(self) -> bool:
        return bool(self.log_likelihood_suites or self.cka)

    def _load(self) -> None:
        from ftcl.data.retention_data import load_retention_data
        from ftcl.evaluation.likelihood import suite_row_indices

        self.expert_rows = {}
        if not self.active:
            return
        if self.data_path is None:
            print(f"[ftcl] {self.label}: no π* data; log-likelihoods and CKA are not logged", file=sys.stderr)
            self.log_likelihood_suites, self.cka = [], False
            return
        data = load_retention_data(self.data_path)
        indices = suite_row_indices(data, self.env_name, self.env_options, self.log_likelihood_suites)
        empty = [suite for suite, rows in indices.items() if len(rows) == 0]
        if empty:
            print(f"[ftcl] {self.label}: π*'s data {self.data_path} has no states of suite(s) {empty}; "
                  "their log-likelihood is not logged", file=sys.stderr)
        indices = {suite: rows for suite, rows in indices.items() if len(rows)}
        self.expert_rows = {suite: (data["obs"][rows], data["actions"][rows]) for suite, rows in indices.items()}
        if self.record is None and indices:  # (a restored trial keeps the record of its checkpoint)
            self.record = StateRecord.start(indices, {suite: obs for suite, (obs, _) in self.expert_rows.items()})
        if self.cka:
            self.cka_probe = self._cka_probe(data)

    def _cka_probe(self, data: dict[str, np.ndarray]) -> CKAProbe | None:
        from ftcl.algorithms.pi_star import load_pi_star_module

        if self.module_path is None:
            print(f"[ftcl] {self.label}: evaluation.cka needs π*'s module (pretrained.module or "
                  "pretrained.train); CKA is not logged", file=sys.stderr)
            return None
        rows = select_rows(np.ones(len(data["obs"]), dtype=bool), MAX_CKA_ROWS)
        reference = load_pi_star_module(self.module_path)  # θ*, critics included (strict)
        probe = CKAProbe(reference, data["obs"][rows], data["actions"][rows])
        if not probe.networks:
            print(f"[ftcl] {self.label}: π*'s module {type(reference).__name__} has no actor or critic "
                  "encoder that CKA knows; CKA is not logged", file=sys.stderr)
            return None
        return probe

    def evaluate(self, env_steps: int, policy_module: Any, current_activations: Activations) -> dict[str, float]:
        """The analyses' metrics at `env_steps`; the per-state values go to `record`."""
        if self.expert_rows is None:
            self._load()
        metrics: dict[str, float] = {}
        per_state = {}
        for suite, (observations, actions) in (self.expert_rows or {}).items():
            values = stored_action_log_likelihoods(policy_module, observations, actions)
            per_state[suite] = values
            metrics.update(log_likelihood_metrics(suite, values))
        if self.record is not None and per_state:
            self.record.add(env_steps, per_state)
        if self.cka_probe is not None:
            probe = self.cka_probe
            metrics.update(probe.metrics(current_activations(probe.observations, probe.actions, probe.networks)))
        return metrics

    # ---- the record, written for the report and kept in checkpoints ----
    def save_record(self, path: str | Path) -> Path | None:
        """Write the state record to `path` (None when there is none yet)."""
        return self.record.save(path) if self.record is not None and self.record.env_steps else None

    def restore_record(self, path: str | Path) -> None:
        """Continue the record saved at `path` (a trial restored from its checkpoint), if any."""
        if Path(path).is_file():
            self.record = read_state_record(path)
