"""The Trainer callback that reports each evaluation, with its checkpoint, to whoever runs the trial."""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable

from transformers import TrainerCallback

from .items import ITEMS, ITEMS_FILE


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the trial cannot produce a useful adapter."""


Report = Callable[[dict, str], None]


class ReportCallback(TrainerCallback):
    """At every evaluation: collect metrics; after the checkpoint is saved: report both.

    The Trainer evaluates and then saves at the same step (``save_steps == eval_steps``), so
    ``on_save`` sees the freshly written ``checkpoint-<step>`` folder (adapter + optimizer,
    scheduler and RNG state, never the base weights) and the metrics of that step.
    """

    def __init__(self, report: Report, *, started: float | None = None,
                 should_stop: Callable[[], bool] | None = None):
        """``started``: when the trial started (``time.monotonic()``), to report how long it
        took to its first training step; ``should_stop``: asked after every step, True ends
        training there (the trial was stopped and its worker is wanted for the next one)."""
        self._report = report
        self._started = time.monotonic() if started is None else started
        self._first_step: float | None = None
        self._should_stop = should_stop
        self.extra: dict = {}  # reported with every evaluation (how the trial started)
        self.eval_size: Callable[[], int] | None = None  # rows in the eval set just evaluated
        self.early = None  # trainables.early_eval.EarlyEval, with scheduler.early_eval_samples
        self.task = None  # trainables.task_eval.TaskEval, with evaluation.scorers
        self._eval: dict | None = None
        self._task: dict = {}
        self._train_loss: float | None = None
        self._lr: float | None = None
        self._grad_norm: float | None = None
        self._tokens = (None, None)  # (time, num_tokens) at the previous report
        self._last_tokens: float | None = None
        self.history: list[dict] = []

    def on_step_begin(self, args, state, control, **kwargs):
        if self._first_step is None:
            self._first_step = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self._should_stop is not None and self._should_stop():
            control.should_training_stop = True
            control.should_evaluate = control.should_save = False
            return control
        # Always finish with an evaluation and a checkpoint, even when max_steps is not a
        # multiple of eval_steps, so a trial's last step is reported.
        if state.global_step >= state.max_steps and state.global_step % args.eval_steps:
            control.should_evaluate = True
            control.should_save = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            loss = float(logs["loss"])
            if not math.isfinite(loss):
                raise TrainingDiverged(f"training diverged: train loss is {loss} at step "
                                       f"{state.global_step}")
            self._train_loss = loss
        if "learning_rate" in logs:
            self._lr = float(logs["learning_rate"])
        if "grad_norm" in logs:
            self._grad_norm = float(logs["grad_norm"])
        if "num_tokens" in logs:
            self._last_tokens = float(logs["num_tokens"])
            if self._tokens[0] is None:
                self._tokens = (time.monotonic(), self._last_tokens)

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        metrics = metrics or {}
        loss = float(metrics.get("eval_loss", float("nan")))
        if not math.isfinite(loss):
            raise TrainingDiverged(f"training diverged: eval loss is {loss} at step "
                                   f"{state.global_step}")
        self._eval = metrics
        if self.task is not None:  # what the model generates, scored, beside the loss
            due = self.task.due(state.global_step, state.max_steps)
            self._task = self.task.evaluate(model) if due else self.task.missing()

    def on_save(self, args, state, control, **kwargs):
        if self._eval is None:
            return
        step = state.global_step
        loss = float(self._eval["eval_loss"])
        now = time.monotonic()
        tps = 0.0
        t0, n0 = self._tokens
        if t0 is not None and self._last_tokens is not None and now > t0:
            tps = (self._last_tokens - n0) / (now - t0)
            self._tokens = (now, self._last_tokens)
        metrics = {
            "step": step,
            "eval_loss": loss,
            "eval_perplexity": math.exp(min(loss, 50.0)),
            "eval_mean_token_accuracy": float(self._eval.get("eval_mean_token_accuracy", 0.0)),
            "train_loss": self._train_loss if self._train_loss is not None else float("nan"),
            "learning_rate": self._lr if self._lr is not None else 0.0,
            "grad_norm": self._grad_norm if self._grad_norm is not None else float("nan"),
            "tokens_per_second": tps,
            "peak_memory_mb": peak_memory_mb(),
            "start_seconds": (self._first_step or now) - self._started,
            **self._task,
            **self.extra,
        }
        if self.eval_size is not None:
            metrics["eval_samples"] = self.eval_size()
        if self.early is not None:
            metrics = self.early.adjust(metrics)
        checkpoint = os.path.join(args.output_dir, f"checkpoint-{step}")
        items = metrics.pop(ITEMS, None)
        if items is not None and os.path.isdir(checkpoint):
            # Each eval item's value travels with the checkpoint (Ray persists the folder), so
            # a trial's best checkpoint can be compared item by item; the reports (progress.csv)
            # stay one number per metric.
            with open(os.path.join(checkpoint, ITEMS_FILE), "w") as f:
                json.dump(items, f, separators=(",", ":"))
        self.history.append(metrics)
        self._eval, self._task = None, {}
        self._report(metrics, checkpoint)


_HWM = "/proc/self/status"  # Linux: VmHWM, the peak resident set size, resettable


def reset_peak_memory() -> None:
    """Start the peak-memory figure afresh for a new trial: a reused (warm) worker would
    otherwise report the highest peak of every trial it ran. On a GPU torch's peak statistics
    are reset; on Linux the process's peak RSS is set back to its current RSS (``clear_refs``
    5). Elsewhere (macOS) nothing can reset it and the figure is the process's."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_mb() -> float:
    """Peak memory of the trial so far (since :func:`reset_peak_memory`): GPU memory allocated
    by torch when on a GPU, else the process's peak resident set size."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        with open(_HWM) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # KiB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # lifetime: KiB, macOS bytes
    return peak / (2**20 if sys.platform == "darwin" else 1024)
