"""``scheduler.early_eval_samples``: evaluate on a fixed subset of the eval set at early steps.

Before ASHA's last stopping rung (``full_from``) a trial evaluates on ``samples`` examples
drawn once with the sweep's seed, so every trial is judged on the same ones; from there on, on
the whole eval set. What is reported keeps the two apart: the metric's own columns
(``eval_loss``, ...) hold whole-set values only, NaN at subset evaluations, so a best value,
a checkpoint's score or a curve never mixes them; ``search_value`` holds the metric on
whichever set was evaluated, and is what ASHA and the searcher rank on.
"""

from __future__ import annotations

import random
from typing import Any

from transformers import TrainerCallback

from .metrics import SEARCH_VALUE

# What a subset evaluation leaves NaN: the metric columns measured on the eval set.
EVAL_METRICS = ("eval_loss", "eval_perplexity", "eval_mean_token_accuracy")


def subset_indices(size: int, samples: int, seed: int) -> list[int]:
    """The eval rows of the subset, in eval-set order: the same for every trial of a sweep."""
    if samples >= size:
        return list(range(size))
    return sorted(random.Random(seed).sample(range(size), samples))


class EarlyEval(TrainerCallback):
    """Points the trainer's eval set at the subset or the whole set before each evaluation.

    ``on_step_end`` runs before the Trainer's evaluate-and-save of the step, so the choice
    made here is the set evaluated (and reported) at that step.
    """

    def __init__(self, trainer, early: dict[str, Any]):
        self._trainer = trainer
        self.full = trainer.eval_dataset
        self.subset = self.full.select(
            subset_indices(len(self.full), int(early["samples"]), int(early["seed"])))
        self.full_from = int(early["full_from"])
        self.metric = early["metric"]
        self._use(0)

    def _use(self, step: int) -> None:
        self._trainer.eval_dataset = self.subset if step < self.full_from else self.full

    @property
    def on_subset(self) -> bool:
        """The set evaluated last (or next) is the subset."""
        return self._trainer.eval_dataset is self.subset and len(self.subset) < len(self.full)

    def on_step_end(self, args, state, control, **kwargs):
        self._use(state.global_step)

    def adjust(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """A report's metrics as described in the module docstring."""
        out = {**metrics, SEARCH_VALUE: metrics[self.metric]}
        if self.on_subset:
            out.update({k: float("nan") for k in EVAL_METRICS})
        return out
