"""``search.budget``: a sweep's compute in training steps, and how many trials it pays for.

A budget is an int or a string ``"2880 steps"``. It does two things:

* **Sizing.** When ``search.num_trials`` is not given, the sweep plans
  ``max(1, budget // S)`` trials, ``S`` being the steps one trial is expected to train.
  With ASHA (grace period ``g``, reduction factor ``rf``, ``max_t`` ``T``, stopping rungs
  ``g = r0 < r1 < ... < rm < T``) every trial trains to ``g``, one in ``rf`` goes on to
  ``r1``, one in ``rf^2`` to ``r2``, ..., one in ``rf^(m+1)`` to ``T``::

      S = g + (r1 - g) / rf + (r2 - r1) / rf^2 + ... + (T - rm) / rf^(m+1)

  Without a scheduler (``scheduler.type: none``) ``S = T``. It is an expectation: Ray's ASHA
  lets the first trials at a rung through (there is nothing yet to compare them with), so a
  small sweep spends more per trial than ``S``.
* **Spending** (``orchestrator/run/budget.py``): no trial is launched once the trials'
  steps (each trial's furthest reported step, summed) reach the budget; running trials
  finish as ASHA lets them.

When both are given, ``num_trials`` caps the trials and the budget caps the compute.

Wall time is not a budget here: Ray Tune's own time limit (``TuneConfig.time_budget_s``)
stops the running trials mid-training, and a resumed sweep gets the whole time again.

Nothing here imports Ray or torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

EXAMPLE = "2880 steps"
_STEPS = re.compile(r"^\s*(\d[\d_,]*)\s*(?:steps?)?\s*$", re.IGNORECASE)
_TIME = re.compile(r"^\s*\d+(?:\.\d+)?\s*(?:s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|"
                   r"days?|gpu[-_ ]?h(?:ours?)?)\s*$", re.IGNORECASE)


def parse_budget(value: Any) -> int:
    """``2880`` or ``"2880 steps"`` -> ``2880``.

    Raises:
        ValueError: not a positive number of steps (a wall time is named as such), with the
            fix in the message.
    """
    if isinstance(value, bool):
        steps = None
    elif isinstance(value, int):
        steps = value
    elif isinstance(value, float) and value.is_integer():
        steps = int(value)
    elif isinstance(value, str) and _STEPS.match(value):
        steps = int(re.sub(r"[_,]", "", _STEPS.match(value).group(1)))
    elif isinstance(value, str) and _TIME.match(value):
        raise ValueError(
            "a wall-time budget is not supported: Ray Tune's own time limit stops the running "
            "trials mid-training and starts over in full when the sweep is resumed. Fix: give "
            f"the budget in training steps (e.g. search.budget: {EXAMPLE!r}); "
            "training.max_steps x the trials you can afford is a start")
    else:
        steps = None
    if steps is None:
        raise ValueError(f"not a number of training steps. Fix: write a whole number, e.g. "
                         f"search.budget: 2880 or search.budget: {EXAMPLE!r}")
    if steps <= 0:
        raise ValueError("must be more than 0 training steps. Fix: e.g. search.budget: "
                         f"{EXAMPLE!r}, or remove it for no budget")
    return steps


def stopping_rungs(grace: int, max_t: int, reduction_factor: float) -> list[float]:
    """ASHA's rungs below ``max_t`` (where it may stop a trial), lowest first."""
    from .asha import asha_rungs

    if grace >= max_t:
        return []
    return [float(r) for r in asha_rungs(grace, max_t, reduction_factor) if r < max_t]


def expected_steps(*, max_t: int, grace: int | None = None,
                   reduction_factor: float | None = None) -> float:
    """Steps one trial is expected to train: ``max_t`` without ASHA (``grace`` None), else
    ``g + (r1 - g) / rf + ... + (max_t - rm) / rf^(m+1)`` over ASHA's stopping rungs."""
    rungs = [] if grace is None else stopping_rungs(grace, max_t, reduction_factor)
    if not rungs:
        return float(max_t)
    points = rungs + [float(max_t)]
    total = points[0]
    for k in range(1, len(points)):
        total += (points[k] - points[k - 1]) / reduction_factor ** k
    return total


@dataclass(frozen=True)
class BudgetPlan:
    """What a budget buys: ``trials`` of ``per_trial`` expected steps each."""

    steps: int
    per_trial: float
    trials: int  # the sweep's num_trials (sized here, or the user's)
    sized: bool  # num_trials was computed from the budget
    scheduler: str  # how per_trial was reckoned, in words
    grid: bool = False

    def describe(self) -> str:
        """The line ``validate`` prints."""
        head = f"budget {self.steps} steps"
        if self.grid:
            return (f"{head}: caps the grid's compute (no trial starts once the trials have "
                    f"trained {self.steps} steps)")
        each = f"expected {self.per_trial:.0f} steps each {self.scheduler}"
        if self.sized:
            return f"{head}: ~{self.trials} trials of {each} (search.num_trials sized to it)"
        afford = max(1, math.floor(self.steps / self.per_trial))
        return (f"{head}: pays for ~{afford} trials of {each}; search.num_trials = "
                f"{self.trials} caps the trials, the budget the compute")


def plan_budget(cfg) -> BudgetPlan | None:
    """The budget's plan for a validated config (``num_trials`` as the user gave it or not);
    None without a budget. ASHA's bounds as ``rules.check_rules`` resolves them."""
    search = cfg.search
    if search.budget is None:
        return None
    steps = parse_budget(search.budget)
    max_t = cfg.scheduler.max_t or cfg.training.max_steps
    if cfg.scheduler.type == "asha":
        grace = cfg.scheduler.grace_period or min(cfg.training.eval_steps, max_t)
        rf = cfg.scheduler.reduction_factor
        per_trial = expected_steps(max_t=max_t, grace=grace, reduction_factor=rf)
        rungs = stopping_rungs(grace, max_t, rf)
        how = (f"under ASHA (rungs {', '.join(f'{r:g}' for r in rungs)}, reduction factor "
               f"{rf:g}, max_t {max_t})" if rungs else f"(ASHA has no rung before max_t {max_t})")
    else:
        per_trial, how = float(max_t), "(no early stopping: every trial to max_steps)"
    grid = search.algorithm == "grid"
    sized = not grid and "num_trials" not in search.model_fields_set
    trials = max(1, math.floor(steps / per_trial)) if sized else search.num_trials
    return BudgetPlan(steps=steps, per_trial=per_trial, trials=trials, sized=sized,
                      scheduler=how, grid=grid)


def sized(cfg, plan: BudgetPlan | None):
    """``cfg`` with ``search.num_trials`` set to what the budget pays for (when it was not
    given); ``cfg`` itself otherwise."""
    if plan is None or not plan.sized:
        return cfg
    search = cfg.search.model_copy(update={"num_trials": plan.trials})
    return cfg.model_copy(update={"search": search})


def spent_steps(steps_by_trial: dict[str, int]) -> int:
    """The steps a sweep has spent: each trial's furthest step, summed."""
    return sum(steps_by_trial.values())


def budget_line(spent: int, budget: int) -> str:
    """``"spent 2950 of 2880 steps (102 %)"``: the summary's, the status's and the report's."""
    return f"spent {spent} of {budget} steps ({100 * spent / budget:.0f} %)"
