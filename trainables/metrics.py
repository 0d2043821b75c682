"""What every trial reports at each evaluation (torch-free, so config validation can use it)."""

from __future__ import annotations

# Metrics a sweep may optimise, with the direction that is better.
OPTIMIZABLE = {
    "eval_loss": "min",
    "eval_perplexity": "min",
    "eval_mean_token_accuracy": "max",
    "train_loss": "min",
}
# Everything in a report; ``step`` is ASHA's time attribute.
REPORTED = (*OPTIMIZABLE, "learning_rate", "grad_norm", "tokens_per_second", "step")
