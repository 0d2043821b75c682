"""What every trial reports at each evaluation (torch-free, so config validation can use it)."""

from __future__ import annotations

# Metrics a sweep may optimise, with the direction that is better.
OPTIMIZABLE = {
    "eval_loss": "min",
    "eval_perplexity": "min",
    "eval_mean_token_accuracy": "max",
    "train_loss": "min",
}
# With scheduler.early_eval_samples: the metric on the eval set a trial just evaluated (a fixed
# subset before ASHA's last stopping rung, all of it after), which ASHA and the searcher rank
# on; the metric's own column is NaN at subset evaluations (trainables/early_eval.py).
SEARCH_VALUE = "search_value"
# Everything in a report but ``step`` (ASHA's time attribute and every curve's x axis), with
# its TensorBoard tag. ``peak_memory_mb`` is the trial's own peak (reset when it starts, also in a
# reused worker): GPU memory on a GPU, else the process's peak RSS.
TENSORBOARD_TAGS = {
    "train_loss": "train/loss",
    "learning_rate": "train/learning_rate",
    "grad_norm": "train/grad_norm",
    "tokens_per_second": "train/tokens_per_second",
    "eval_loss": "eval/loss",
    "eval_perplexity": "eval/perplexity",
    "eval_mean_token_accuracy": "eval/mean_token_accuracy",
    "peak_memory_mb": "system/peak_memory_mb",
    SEARCH_VALUE: "search/value",
    "task_seconds": "system/task_seconds",  # generating and scoring one evaluation
}

# Keys named task_* that are not metrics of the answers (the examples and the label scorers'
# confusion matrices are JSON text, task_items each eval item's values (trainables/items.py),
# the others bookkeeping); every other task_* key is a task metric (trainables/scoring.py).
TASK_BOOKKEEPING = ("task_examples", "task_seconds", "task_samples", "task_reference_distinct",
                    "task_confusion", "task_items")


def is_task_metric(key: str) -> bool:
    return key.startswith("task_") and key not in TASK_BOOKKEEPING


def tensorboard_tag(key: str) -> str | None:
    """The TensorBoard tag of a reported key (None: not a scalar to plot); task metrics go
    under task/."""
    if key in TENSORBOARD_TAGS:
        return TENSORBOARD_TAGS[key]
    return "task/" + key.removeprefix("task_") if is_task_metric(key) else None
