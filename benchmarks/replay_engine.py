"""Replay a sweep's search on recorded learning curves: the real searcher and scheduler, no training.

:func:`replay` builds the searcher, ASHA and the search space exactly as ``qlora-sweep run``
does (``orchestrator.run.tuner``'s ``search_alg``, ``scheduler`` and ``param_space``, from a
validated config and its plan), wraps them as Ray Tune's controller does (``SearchGenerator``
around a ``Searcher``, the experiment's configurations added), and plays Tune's controller
loop on a simulated clock:

* up to ``concurrency`` trials run at once; a free slot asks the search algorithm for its next
  trial (``next_trial``), as Tune does;
* a trial's configuration, completed with the config's own value of each table setting the
  sweep does not search (:func:`fixed_settings`), is mapped to the nearest recorded
  configuration (:func:`distance`), and one of that configuration's recorded seeds is drawn for it; the trial
  then "reports" the recorded evaluations at the recorded training times, in time order with
  the other running trials;
* each report goes through the scheduler (ASHA's decision) and then, unless ASHA stopped the
  trial on it, to the searcher's ``on_trial_result``; a stopped or finished trial gets the
  scheduler's and the searcher's ``on_trial_complete`` with its last result, in the order
  ``TuneController._process_trial_result`` and ``stop_trial`` use (Ray 2.60).

Steps spent are counted as ``benchmarks/search_efficiency.py`` counts them: at each report,
the sum over trials of the latest step each has reported.
"""

from __future__ import annotations

import heapq
import math
import random
import tempfile
from dataclasses import dataclass, field

from benchmarks.curve_table import Run, Table

# Distance between a proposed and a recorded configuration, in decades of learning rate:
# the learning rate on its log scale; alpha_ratio scales the adapter's update like the
# learning rate does (log10 of the ratio); a doubling of r counts 0.1; another set of target
# modules 1.0 (decades), another dropout 0.1 per 0.05. Any other setting: 0 if equal, else 1.
_LOG_KEYS = {"training.learning_rate": 1.0, "lora.alpha_ratio": 1.0,
             "lora.r": 0.1 / math.log10(2), "lora.alpha": 1.0}
_LINEAR_KEYS = {"lora.dropout": 2.0}


def distance(proposed: dict, recorded: dict) -> float:
    d = 0.0
    for key, want in proposed.items():
        if key not in recorded:
            continue
        have = recorded[key]
        if key in _LOG_KEYS:
            d += _LOG_KEYS[key] * abs(math.log10(float(want)) - math.log10(float(have)))
        elif key in _LINEAR_KEYS:
            d += _LINEAR_KEYS[key] * abs(float(want) - float(have))
        else:
            d += 0.0 if _same(want, have) else 1.0
    return d


def _same(a, b) -> bool:
    def norm(v):
        return "+".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
    return norm(a) == norm(b)


@dataclass
class Lookup:
    table: Table
    configs: dict[int, list[Run]] = field(init=False)

    def __post_init__(self):
        self.configs = self.table.configs()

    def nearest(self, proposed: dict) -> int:
        return min(self.configs, key=lambda c: (distance(proposed, self.configs[c][0].settings), c))

    def keys(self) -> set[str]:
        """The settings the table's configurations vary (its search-space columns)."""
        return {k for runs in self.configs.values() for k in runs[0].settings}


def fixed_settings(cfg, plan, keys) -> dict:
    """The config's own value of each table setting the sweep does not search: a proposal
    maps to the recorded configuration nearest *all* its settings (a space that fixes
    ``lora.alpha_ratio`` at 2 is not looked up among every recorded ratio)."""
    from trainables.lora import lora_alpha

    out = {}
    for key in keys:
        if key in plan.domains:
            continue
        section, _, name = key.partition(".")
        value = getattr(getattr(cfg, section, None), name, None)
        if key == "lora.alpha_ratio" and cfg.lora.alpha is not None:
            value = lora_alpha(cfg.lora.model_dump()) / cfg.lora.r  # alpha fixed: its ratio
        if value is not None:
            out[key] = value
    return out


@dataclass
class Outcome:
    """One replay: every report as ``(steps spent, value)`` in time order, and the trials."""

    curve: list[tuple[int, float]]
    trials: list[tuple[int, int, int]]  # (config, seed, last step reached)


class _Trial:
    def __init__(self, trial, run: Run, start: float):
        self.trial, self.run, self.start, self.next = trial, run, start, 0


def replay(cfg, plan, lookup: Lookup, *, seed: int | None, max_spent: int, concurrency: int,
           metric: str | None = None, recipe=None) -> Outcome:
    """One replay of ``cfg``'s search (its ``search.seed`` set by the caller) on the table,
    until the steps spent reach ``max_spent`` or the search has no more trials. ``seed``
    draws which recorded seed a trial's configuration plays (None: its lowest seed)."""
    from ray.tune.experiment import Experiment
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler
    from ray.tune.search import SearchGenerator, Searcher
    from ray.tune.search.util import _set_search_properties_backwards_compatible as set_props

    from orchestrator.run.budget import with_budget
    from orchestrator.run.tuner import param_space, scheduler, search_alg

    rank = plan.rank_key
    metric = metric or cfg.search.metric
    space = param_space(plan, grid=cfg.search.algorithm == "grid")
    with tempfile.TemporaryDirectory(prefix="replay-") as tmp:
        import optuna

        search = search_alg(cfg, sweep_dir=tmp, concurrency=concurrency, name="replay",
                            rank_key=rank, searched=bool(plan.domains), max_t=plan.max_t,
                            recipe=recipe, storage=optuna.storages.InMemoryStorage())
        search = with_budget(search, budget=cfg.search.budget)  # as build_tuner wraps it
        if isinstance(search, Searcher):
            search = SearchGenerator(search)
        experiment = Experiment(name="replay", run=_nothing, config=space,
                                num_samples=1 if cfg.search.algorithm == "grid"
                                else cfg.search.num_trials, storage_path=tmp)
        set_props(search.set_search_properties, rank, plan.mode, space,
                  **experiment.public_spec)
        asha = scheduler(cfg, plan) or FIFOScheduler()
        asha.set_search_properties(rank, plan.mode, **experiment.public_spec)
        search.add_configurations([experiment])
        return _loop(search, asha, lookup, TrialScheduler, rank=rank, metric=metric,
                     fixed=fixed_settings(cfg, plan, lookup.keys()),
                     rng=None if seed is None else random.Random(seed), max_spent=max_spent,
                     concurrency=concurrency)


def _nothing(config):  # the trainable Tune's experiment names; a replay never runs it
    raise RuntimeError("a replay trains nothing")


def _loop(search, asha, lookup: Lookup, TrialScheduler, *, rank: str, metric: str, fixed: dict,
          rng: random.Random | None, max_spent: int, concurrency: int) -> Outcome:
    clock, events, running = 0.0, [], {}
    latest: dict[str, int] = {}
    curve, trials = [], []
    spent = 0
    while True:
        while len(running) < concurrency and spent < max_spent and not search.is_finished():
            trial = search.next_trial()
            if trial is None:
                break
            config = lookup.nearest({**fixed, **trial.config})
            runs = lookup.configs[config]
            run = rng.choice(runs) if rng else min(runs, key=lambda r: r.seed)
            asha.on_trial_add(None, trial)
            state = _Trial(trial, run, clock)
            running[trial.trial_id] = state
            heapq.heappush(events, (clock + run.times[0], trial.trial_id))
            trials.append([config, run.seed, 0])
            state.index = len(trials) - 1
        if not running:
            break
        clock, trial_id = heapq.heappop(events)
        state = running[trial_id]
        i, run = state.next, state.run
        value = run.value(metric, i)
        ranked = run.value(rank, i) if rank != metric else value
        last = i == len(run.steps) - 1
        result = {"step": run.steps[i], metric: value, rank: ranked,
                  "training_iteration": i + 1, "done": last, "trial_id": trial_id}
        latest[trial_id] = run.steps[i]
        trials[state.index][2] = run.steps[i]
        spent = sum(latest.values())
        curve.append((spent, value))
        decision = asha.on_trial_result(None, state.trial, result)
        if decision == TrialScheduler.STOP or last:
            asha.on_trial_complete(None, state.trial, result)
            search.on_trial_complete(trial_id, result=result)
            del running[trial_id]
        else:
            search.on_trial_result(trial_id, result)
            state.next += 1
            heapq.heappush(events, (state.start + run.times[state.next], trial_id))
        if spent >= max_spent:
            break
    return Outcome(curve, [tuple(t) for t in trials])


def table_trainable(config: dict, lookup: Lookup, metric: str, rank: str, fixed: dict):
    """A Ray Tune trainable that trains nothing: it reports the recorded evaluations of the
    configuration nearest ``config`` (its lowest seed), one ``tune.report`` per evaluation."""
    from ray import tune

    import time

    runs = lookup.configs[lookup.nearest({**fixed, **config})]
    run = min(runs, key=lambda r: r.seed)
    started = time.time()  # the order trials started in (Ray's trial ids are not ordered)
    for i, step in enumerate(run.steps):
        value = run.value(metric, i)
        tune.report({"step": step, metric: value, "started_at": started,
                     rank: run.value(rank, i) if rank != metric else value})


def through_ray(cfg, plan, lookup: Lookup, *, root: str) -> list[tuple[int, int, int]]:
    """The same search run by Ray Tune itself (``build_tuner``, local Ray, the table-backed
    trainable), one trial at a time so the order is Ray's and not the machine's: the trials as
    ``(config, seed, last step)`` in the order they were created."""
    from ray import tune

    from orchestrator.config.preflight import preflight
    from orchestrator.run.ray_session import init_ray
    from orchestrator.run.tuner import build_tuner

    spec = preflight(cfg, plan)
    started = init_ray(None)
    try:
        fixed = fixed_settings(cfg, plan, lookup.keys())
        trainable = tune.with_parameters(table_trainable, lookup=lookup, fixed=fixed,
                                         metric=cfg.search.metric, rank=plan.rank_key)
        sweep_dir = f"{root}/through-ray"
        import os

        os.makedirs(sweep_dir, exist_ok=True)
        tuner = build_tuner(cfg, plan, spec, storage_path=root, name="through-ray",
                            sweep_dir=sweep_dir, concurrency=1, trainable=trainable)
        grid = tuner.fit()
        out = []
        for result in sorted(grid, key=lambda r: r.metrics_dataframe["started_at"].min()):
            config = lookup.nearest({**fixed, **result.config})
            runs = lookup.configs[config]
            frame = result.metrics_dataframe
            out.append((config, min(r.seed for r in runs), int(frame["step"].max())))
        return out
    finally:
        if started:
            import ray

            ray.shutdown()

