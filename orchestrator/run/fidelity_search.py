"""Optuna told what each trial really was: ASHA's stops as PRUNED, finished trials by their best.

Ray 2.60's ``OptunaSearch`` tells Optuna every trial as COMPLETE with the *last* result Ray
passed it: a trial ASHA stopped at step 60 of 240 enters TPE as if its 60-step value were a
finished run's, and a finished trial is told its last value while the sweep keeps its *best*
checkpoint. Optuna's own treatment of pruned trials (ranked below every completed one, deeper
ones first, by the value where they stopped) never applies.

:class:`FidelityOptunaSearch` reports every evaluation to the Optuna trial at its training
step (``result["step"]``, not Ray's report count), and when the trial ends tells Optuna

* PRUNED when it ended before ``max_t`` (ASHA stopped it, or it diverged): Optuna keeps its
  intermediate values and ranks it by the last one, at its depth;
* COMPLETE with the best value it reported (the value the sweep selects its checkpoint by,
  ``sweepdir.results.best_of``'s rule) when it reached ``max_t``;
* FAIL when it errored.

Ray calls ``on_trial_result`` for every result except the one on which the scheduler stops a
trial; that one arrives only with ``on_trial_complete`` and is counted there.
"""

from __future__ import annotations

import math

from ray.tune.search.optuna import OptunaSearch


class FidelityOptunaSearch(OptunaSearch):
    def __init__(self, *args, max_t: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._max_t = max_t
        self._reported: dict[str, dict[int, float]] = {}  # trial -> step -> value

    def _note(self, trial_id: str, result: dict | None) -> None:
        if not result:
            return
        value, step = result.get(self._metric), result.get("step")
        if step is None or value is None:
            return
        try:
            value = float(value)
        except (TypeError, ValueError):
            return
        if not math.isfinite(value):
            return
        seen = self._reported.setdefault(trial_id, {})
        step = int(step)
        if step in seen:
            return
        seen[step] = value
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            ot_trial.report(value, step)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or isinstance(self.metric, list):
            return super().on_trial_result(trial_id, result)
        self._note(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id in self._completed_trials or isinstance(self.metric, list):
            return super().on_trial_complete(trial_id, result, error)
        import optuna

        state = optuna.trial.TrialState
        self._note(trial_id, result)
        seen = self._reported.pop(trial_id, {})
        ot_trial = self._ot_trials[trial_id]
        reached = bool(result) and int(result.get("step") or 0) >= self._max_t
        if error:
            told, value = state.FAIL, None
        elif reached and seen:
            pick = min if self._mode == "min" else max
            told, value = state.COMPLETE, pick(seen.values())
        else:
            told, value = state.PRUNED, None
        self._ot_study.tell(ot_trial, value, state=told)
        self._completed_trials.add(trial_id)
