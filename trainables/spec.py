"""The spec of a trial: everything a worker needs to train, evaluate or tokenize, typed and
never changed once built.

The driver builds the sweep's spec once, in pre-flight (``orchestrator.config.preflight``),
from the validated config; each trial's own spec is ``spec.for_trial(searched)``, with the
values Tune sampled applied and LoRA's alpha and target modules resolved. What the driver
learns later (the disk budget, the tokenized data) goes into a new spec made with
:func:`dataclasses.replace`. The sections (``model``, ``data``, ``lora``, ``training``) are
the config's sections as plain dicts, so a spec pickles to Ray workers as it is and
``trainables`` needs nothing from ``orchestrator``; treat them as read-only.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .lora import lora_alpha


@dataclass(frozen=True)
class TrialSpec:
    """What one trial (or the baseline, or a promotion's evaluation) is run with."""

    model: dict[str, Any]  # the model section: name_or_path, revision, quantization, ...
    # data sources (``train``/``eval``: {path, local, split, subset}), format, max_length, ...
    data: dict[str, Any]
    lora: dict[str, Any]  # the lora section; in a trial's spec also alpha and resolved targets
    training: dict[str, Any]  # the training section
    data_format: str = "auto"  # as detected in pre-flight: prompt_completion, messages, ...
    target_groups: dict[str, list[str]] = field(default_factory=dict)  # group -> modules
    threads: int = 1  # torch threads per trial (resources.cpu)
    warm_start: bool = False  # keep the loaded base model in the worker for the next trial
    early_eval: dict[str, Any] | None = None  # scheduler.early_eval_samples: trainables.early_eval
    task_eval: dict[str, Any] | None = None  # evaluation.scorers: trainables.task_eval
    # written into every checkpoint, so `generate` asks as training did
    prompt_format: dict[str, Any] | None = None
    disk_budget: dict[str, Any] | None = None  # storage.max_gb: {path, max_bytes}
    # the data as TRL tokenized it once (Arrow tables and their split seed), shared by trials
    prepared_data: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    # the rows of the local data files as the driver read them (``train``/``eval``: Arrow
    # tables), so a worker never opens the driver's paths (a cluster without a shared disk)
    data_rows: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def for_trial(self, searched: dict[str, Any]) -> TrialSpec:
        """This spec with a trial's searched values applied (dotted keys as Tune samples
        them: ``lora.r``, ``training.learning_rate``), and LoRA's alpha and target modules
        resolved (``lora.alpha``, ``lora.resolved_target_modules``)."""
        sections = {name: copy.deepcopy(getattr(self, name))
                    for name in ("model", "data", "lora", "training")}
        for key, value in searched.items():
            section, name = key.split(".", 1)
            sections[section][name] = value
        lora = sections["lora"]
        # the alpha the config (or the search) gave, kept apart from the resolved one, so a
        # resolved spec resolved again (tests, benchmarks) derives alpha from its new r
        lora.setdefault("alpha_given", lora.get("alpha"))
        if "lora.alpha" in searched:
            lora["alpha_given"] = searched["lora.alpha"]
        lora["alpha"] = lora_alpha({**lora, "alpha": lora["alpha_given"]})
        target = lora["target_modules"]
        key = "+".join(target) if isinstance(target, list) else target
        lora["resolved_target_modules"] = list(self.target_groups.get(key) or (
            list(target) if isinstance(target, list) else target.split("+")))
        return dataclasses.replace(self, **sections)

    def replace(self, **changes: Any) -> TrialSpec:
        """A new spec with ``changes`` (this one is unchanged)."""
        return dataclasses.replace(self, **changes)
