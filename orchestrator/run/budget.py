"""Spending ``search.budget``: no new trial once the sweep's trials have trained that many steps.

The steps spent are each trial's furthest reported training step (``result["step"]``, the
optimizer step the trainable reports at every evaluation), summed over the sweep's trials; a
trial restarted from a checkpoint is not counted twice. Once the sum reaches the budget, the
search algorithm proposes nothing more: running trials go on until ASHA stops them or they
reach ``max_t``, so a sweep may overshoot its budget by at most the running trials' remaining
steps.

Both kinds of search algorithm a sweep has are wrapped here (``orchestrator/run/tuner.py``):

* :class:`BudgetSearcher` around a ``Searcher`` (Optuna's, behind its
  ``ConcurrencyLimiter``): ``suggest`` returns ``Searcher.FINISHED``, and Ray's
  ``SearchGenerator`` stops asking. ``SearchGenerator.save_to_dir`` saves a wrapper's
  ``get_state()`` beside the searcher's, and ``restore_from_dir`` gives it back on resume.
* :class:`BudgetedVariants`, a ``BasicVariantGenerator`` (random and grid search, which are a
  ``SearchAlgorithm``, not a ``Searcher``): ``next_trial`` returns None and marks the search
  finished. It stays a ``BasicVariantGenerator`` because Ray's controller sizes its queue of
  pending trials by that type (``tune_controller._get_max_pending_trials``: 200 or more for
  one, else the ``ConcurrencyLimiter``'s limit, else 1), so an autoscaling cluster sees as
  many trials waiting as without a budget. Its state is its ``__dict__``, as Ray saves a
  ``BasicVariantGenerator``'s.

Ray's ``Stopper`` was not used: its one sweep-wide hook, ``stop_all``, stops the running
trials too. Ray saves the searcher's state with the experiment only now and then, so a
resumed sweep also counts the steps recorded in its sweep dir (:meth:`StepCount.merge`).
"""

from __future__ import annotations

import logging
from typing import Any

from ray.tune.search import BasicVariantGenerator, Searcher

from ..config.budget import budget_line, spent_steps

log = logging.getLogger(__name__)


class StepCount:
    """The training steps a sweep has spent against its budget."""

    def __init__(self, budget: int, steps: dict[str, int] | None = None):
        self.budget = budget
        self.steps: dict[str, int] = dict(steps or {})
        self.announced = False

    @property
    def spent(self) -> int:
        return spent_steps(self.steps)

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.budget

    def note(self, trial_id: str, result: dict | None) -> None:
        step = (result or {}).get("step")
        if isinstance(step, (int, float)) and not isinstance(step, bool):
            self.steps[trial_id] = max(self.steps.get(trial_id, 0), int(step))

    def merge(self, steps: dict[str, int]) -> None:
        """Take each trial's furthest step from ``steps`` too (a resumed sweep's records)."""
        for trial_id, step in steps.items():
            self.steps[trial_id] = max(self.steps.get(trial_id, 0), int(step))

    def stop_launching(self, running: int | None = None) -> bool:
        """Whether the budget is spent; says so once, the first time it is."""
        if not self.exhausted:
            return False
        if not self.announced:
            self.announced = True
            still = (f"; the {running} running trial{'' if running == 1 else 's'} finish as "
                     f"ASHA lets them" if running else "")
            log.info(f"search.budget: {budget_line(self.spent, self.budget)}; no new trials"
                     f"{still}")
        return True

    def state(self) -> dict[str, Any]:
        return {"steps": dict(self.steps), "announced": self.announced}

    def restore(self, state: dict[str, Any] | None) -> None:
        """A saved state, merged with what is known now (the later of each trial's steps)."""
        if not state:
            return
        self.merge(state.get("steps") or {})
        self.announced = self.announced or bool(state.get("announced"))


class BudgetSearcher(Searcher):
    """A ``Searcher`` that proposes nothing once ``count`` is spent; ``searcher`` does the
    searching."""

    def __init__(self, searcher: Searcher, *, count: StepCount):
        self.searcher = searcher  # the name Ray's SearchGenerator walks wrappers by
        self.count = count
        self.live: set[str] = set()
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    @property
    def metric(self) -> str:
        return self.searcher.metric

    @property
    def mode(self) -> str:
        return self.searcher.mode

    @property
    def max_concurrent(self) -> int:
        """The wrapped ``ConcurrencyLimiter``'s limit (``restore_tuner`` reads it)."""
        return self.searcher.max_concurrent

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.count.stop_launching(running=len(self.live)):
            return Searcher.FINISHED
        suggestion = self.searcher.suggest(trial_id)
        if suggestion not in (None, Searcher.FINISHED):
            self.live.add(trial_id)
        return suggestion

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.count.note(trial_id, result)
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.count.note(trial_id, result)
        self.live.discard(trial_id)
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def add_evaluated_point(self, *args, **kwargs):
        return self.searcher.add_evaluated_point(*args, **kwargs)

    def on_pause(self, trial_id: str) -> None:
        self.searcher.on_pause(trial_id)

    def on_unpause(self, trial_id: str) -> None:
        self.searcher.on_unpause(trial_id)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)

    def get_state(self) -> dict[str, Any]:
        return {"count": self.count.state(), "live": sorted(self.live)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.count.restore(state.get("count"))
        self.live |= set(state.get("live") or ())


class BudgetedVariants(BasicVariantGenerator):
    """Ray's ``BasicVariantGenerator`` (random, grid) that stops generating trials once
    ``count`` is spent; built from a configured one, whose state it takes over."""

    def __init__(self, inner: BasicVariantGenerator, *, count: StepCount):
        super().__init__()
        # Before add_configurations a generator's state is its settings (points to evaluate,
        # max_concurrent, random state): get_state/set_state, as Ray saves and restores it.
        BasicVariantGenerator.set_state(self, inner.get_state())
        self.count = count

    def next_trial(self):
        if not self.is_finished() and self.count.stop_launching(
                running=len(self._live_trials)):
            self.set_finished()
        return super().next_trial()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.count.note(trial_id, result)
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.count.note(trial_id, result)
        super().on_trial_complete(trial_id, result=result, error=error)

    def set_state(self, state: dict[str, Any]) -> None:
        count = self.count
        saved = state.get("count")
        super().set_state(state)
        # The budget is the config's; the steps are the later of the saved ones and the
        # sweep dir's (merged in before Ray restores this state).
        self.count = count
        if isinstance(saved, StepCount):
            count.restore(saved.state())


def with_budget(alg, *, budget: int | None, steps: dict[str, int] | None = None):
    """``alg`` (``tuner.search_alg``'s result) spending at most ``budget`` training steps;
    ``alg`` itself without a budget. ``steps``: each trial's furthest step so far (resume).

    Raises:
        TypeError: ``alg`` is neither a ``Searcher`` nor a ``BasicVariantGenerator``.
    """
    if budget is None:
        return alg
    count = StepCount(budget, steps)
    if isinstance(alg, Searcher):
        return BudgetSearcher(alg, count=count)
    if isinstance(alg, BasicVariantGenerator):
        return BudgetedVariants(alg, count=count)
    raise TypeError(f"search.budget cannot wrap a {type(alg).__name__}: neither a Searcher "
                    f"nor a BasicVariantGenerator")


def count_of(alg) -> StepCount | None:
    """The budget count of a search algorithm :func:`with_budget` made; None for another."""
    return alg.count if isinstance(alg, (BudgetSearcher, BudgetedVariants)) else None
