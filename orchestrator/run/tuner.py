"""Build the Ray Tune ``Tuner``: search space, search algorithm, ASHA, resources, storage."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from search_spaces.domains import encode_choice, to_tune

from trainables.spec import TrialSpec

from ..config.plan import SweepPlan
from ..config.schema import SweepConfig
from ..sweepdir.names import JOURNAL

log = logging.getLogger(__name__)


def param_space(derived: SweepPlan, *, grid: bool = False) -> dict[str, Any]:
    """Flat dotted names -> Tune domains (what Optuna and params.json see)."""
    return {name: to_tune(dom, grid=grid) for name, dom in derived.domains.items()}


def initial_points(cfg: SweepConfig) -> list[dict[str, Any]]:
    return [{k: encode_choice(v) for k, v in p.items()} for p in cfg.search.initial_points]


def optuna_storage(sweep_dir: str):
    """An Optuna journal file inside the sweep dir, so the study outlives the driver."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(Path(sweep_dir) / JOURNAL)))


def search_alg(cfg: SweepConfig, *, sweep_dir: str, concurrency: int, name: str,
               with_initial_points: bool = True, rank_key: str | None = None,
               searched: bool = True, max_t: int | None = None, recipe=None, storage=None):
    """``with_initial_points=False``: a study for a changed space, whose initial points were
    already evaluated in the first one. ``rank_key``: the result key Optuna ranks on when it
    is not the metric (``search_value``, with ``scheduler.early_eval_samples``).
    ``searched=False``: the space is empty (one fixed training); there is nothing for Optuna
    to sample (OptunaSearch refuses an empty space), so Tune's own generator runs the trial.
    ``max_t``: where a trial ends (ASHA's max_t); a trial told before it was stopped early.
    ``recipe``: how Optuna samples (``search_recipe.DEFAULT``); ``storage``: the Optuna
    storage (default: the journal file in the sweep dir)."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator

    points = (initial_points(cfg) if with_initial_points else None) or None
    if cfg.search.algorithm == "optuna" and searched:
        from ray.tune.search.optuna import OptunaSearch

        from .fidelity_search import FidelityOptunaSearch
        from .search_recipe import DEFAULT

        recipe = recipe or DEFAULT
        sampler = recipe.sampler_for(cfg.search.seed, cfg.search.num_trials)
        ranked = ({"metric": rank_key, "mode": cfg.mode}
                  if rank_key and rank_key != cfg.search.metric else {})
        kwargs = dict(points_to_evaluate=points, sampler=sampler, study_name=name,
                      storage=storage or optuna_storage(sweep_dir), **ranked)
        if recipe.fidelity:
            alg = FidelityOptunaSearch(max_t=max_t or cfg.training.max_steps, **kwargs)
        else:
            alg = OptunaSearch(**kwargs)
        return ConcurrencyLimiter(alg, max_concurrent=concurrency)
    # random and grid both sample with Tune's own generator (seeded)
    return BasicVariantGenerator(points_to_evaluate=points, max_concurrent=concurrency,
                                 random_state=cfg.search.seed)


def scheduler(cfg: SweepConfig, derived: SweepPlan):
    if cfg.scheduler.type == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # Ranking on search_value (scheduler.early_eval_samples) names it here, and the Tuner is
    # given no metric: Ray takes the metric from one place or the other, not both.
    ranked = ({"metric": derived.rank_key, "mode": derived.mode}
              if _own_rank_key(cfg, derived) else {})
    return ASHAScheduler(time_attr="step", max_t=derived.max_t,
                         grace_period=derived.grace_period,
                         reduction_factor=cfg.scheduler.reduction_factor, **ranked)


def _rungs(cfg: SweepConfig, derived: SweepPlan) -> list[float]:
    """ASHA's rungs from Ray's own bracket; they must be those validation checked (the
    alignment of ``evaluation.cadence: rungs``, the early-eval subset)."""
    from trainables.compat.ray_private import asha_milestones

    from ..config.rules import asha_rungs

    ray_rungs = asha_milestones(scheduler(cfg, derived))
    ours = asha_rungs(derived.grace_period, derived.max_t, cfg.scheduler.reduction_factor)
    if ray_rungs != [float(r) for r in ours]:
        log.warning(f"Ray's ASHA puts its rungs at {ray_rungs}, validation computed {ours}: "
                    f"orchestrator.config.rules.asha_rungs does not follow this Ray's bracket "
                    f"(checked on Ray 2.60 by tests/test_compat.py); the rung checks of "
                    f"evaluation.cadence and early_eval_samples may be wrong")
    return [int(r) if r.is_integer() else r for r in ray_rungs]


def _own_rank_key(cfg: SweepConfig, derived: SweepPlan) -> bool:
    return derived.rank_key != cfg.search.metric


def _callbacks(cfg: SweepConfig, derived: SweepPlan, spec: TrialSpec, *,
               sweep_dir: str, remote=None) -> list:
    """Ray's CSV and JSON loggers (``progress.csv``, ``result.json``), our TensorBoard runs in
    place of Ray's, ``status.json``, the disk guard, and for a cloud sweep dir (``remote``) the
    upload of the driver's files. ``run_sweep`` turns Ray's automatic loggers off."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback


    from ..callbacks.disk_guard import DiskGuard
    from ..callbacks.tensorboard_log import TensorBoardCallback
    from ..callbacks.trial_status import StatusCallback

    searched = list(derived.domains)
    # Ray pickles the callbacks into tuner.pkl: the closure keeps a spec without the rows.
    lora_only = spec.replace(data_rows=None, prepared_data=None)

    def hparams_of(config: dict[str, Any]) -> dict[str, Any]:
        values = {k: config.get(k) for k in searched}
        values.setdefault("lora.alpha", lora_only.for_trial(config).lora["alpha"])
        return values

    rungs = [] if cfg.scheduler.type == "none" else _rungs(cfg, derived)
    callbacks = [
        CSVLoggerCallback(),
        JsonLoggerCallback(),
        TensorBoardCallback(metric=cfg.search.metric, mode=derived.mode, hparams_of=hparams_of),
        StatusCallback(Path(sweep_dir), metric=cfg.search.metric, mode=derived.mode,
                       searched=searched, max_steps=cfg.training.max_steps,
                       planned=None if cfg.search.algorithm == "grid" else cfg.search.num_trials,
                       rungs=rungs, budget=cfg.search.budget),
        DiskGuard(sweep_dir=remote.uri if remote else sweep_dir, metric=cfg.search.metric,
                  mode=derived.mode, max_steps=cfg.training.max_steps,
                  max_bytes=int(cfg.storage.max_gb * 1e9) if cfg.storage.max_gb else None),
    ]
    if remote is not None:
        from ..callbacks.mirror import MirrorCallback

        callbacks.append(MirrorCallback(remote))  # last: after the files above are written
    return callbacks


def _trainable(cfg: SweepConfig, spec: TrialSpec):
    from ray import tune

    from trainables.entry import tune_trainable

    from .cluster import trial_request

    return tune.with_resources(tune.with_parameters(tune_trainable, base=spec),
                               trial_request(cfg))


def replay_asha(asha, histories: list[tuple[str, int, float, float]], *, mode: str) -> None:
    """Refill ASHA's rungs from the trials' reported results, which Ray does not save: each
    ``(trial_id, step, value, timestamp)`` is fed to the bracket in the order it happened."""
    from types import SimpleNamespace

    from trainables.compat.ray_private import asha_bracket

    sign = -1.0 if mode == "min" else 1.0
    bracket = asha_bracket(asha)  # qlora-sweep's ASHA has one bracket
    for trial_id, step, value, _ in sorted(histories, key=lambda h: h[3]):
        bracket.on_result(SimpleNamespace(trial_id=trial_id), step, sign * value)


def restore_tuner(cfg: SweepConfig, derived: SweepPlan, spec: TrialSpec, *,
                  sweep_dir: str, histories: list[tuple[str, int, float, float]],
                  extend_to: int | None = None, new_study: str | None = None, remote=None,
                  steps_run: dict[str, int] | None = None):
    """The interrupted sweep's Tuner: finished trials stay as they are, unfinished ones go on
    from their newest checkpoint, the searcher continues its study (``searcher-state``), and
    ASHA gets its rungs back from ``histories``. ``extend_to``: the sweep's new number of
    trials (Optuna only), the study going on from the trials it has. ``new_study``: the
    search space changed; new trials come from this study (already seeded with the earlier
    trials inside the new space) and the new ``param_space``. ``steps_run``: each trial's
    furthest step in the sweep dir, counted against ``search.budget`` with what Ray saved."""
    from ray import tune

    tuner = tune.Tuner.restore(remote.uri if remote else sweep_dir,
                               trainable=_trainable(cfg, spec),
                               resume_unfinished=True, resume_errored=False,
                               restart_errored=False)
    # A restored Tuner has no public way to take another scheduler, search wrapper or
    # callbacks than those pickled in tuner.pkl: they are replaced in its config.
    from trainables.compat.ray_private import RestoredTuner, extendable_search

    restored = RestoredTuner(tuner)
    tune_config = restored.tune_config
    asha = scheduler(cfg, derived)
    if asha is not None:
        replay_asha(asha, histories, mode=derived.mode)  # tuner.pkl's ASHA has empty rungs
        tune_config.scheduler = asha
    from .budget import count_of, with_budget

    if count_of(tune_config.search_alg) is not None:  # tuner.pkl's: as the sweep started
        count_of(tune_config.search_alg).merge(steps_run or {})
    if extend_to is not None:
        searcher = tune_config.search_alg
        if new_study is not None:
            # Ray refuses a changed param_space on restore (Tuner.restore(param_space=...)),
            # for the comparability reason the user has just waived.
            restored.set_param_space(param_space(derived))
            searcher = with_budget(
                search_alg(cfg, sweep_dir=sweep_dir, name=new_study,
                           concurrency=searcher.max_concurrent, with_initial_points=False,
                           rank_key=derived.rank_key, max_t=derived.max_t),
                budget=cfg.search.budget, steps=steps_run)
        tune_config.search_alg = extendable_search(
            searcher, total=extend_to,
            space=param_space(derived) if new_study is not None else None)
        tune_config.num_samples = extend_to
    if extend_to is not None or remote is not None:
        # status.json's planned trials come from the new config; a cloud sweep's local copy
        # may be in another place than when tuner.pkl was written.
        restored.set_callbacks(_callbacks(cfg, derived, spec, sweep_dir=sweep_dir,
                                          remote=remote))
    return tuner


def build_tuner(cfg: SweepConfig, derived: SweepPlan, spec: TrialSpec, *,
                storage_path: str, name: str, sweep_dir: str, concurrency: int, remote=None,
                trainable=None):
    """The Tuner for the sweep (not yet started). ``trainable``: another function in place of
    the QLoRA trial (``benchmarks/scale.py`` drives the orchestration with a trivial one)."""
    from ray import tune

    from .budget import with_budget

    grid = cfg.search.algorithm == "grid"
    metric, mode = cfg.search.metric, derived.mode
    own = _own_rank_key(cfg, derived)  # scheduler and searcher name their key themselves
    if trainable is not None:
        from .cluster import trial_request

        trainable = tune.with_resources(trainable, trial_request(cfg))
    return tune.Tuner(
        trainable or _trainable(cfg, spec),
        param_space=param_space(derived, grid=grid),
        tune_config=tune.TuneConfig(
            metric=None if own else metric,
            mode=None if own else mode,
            search_alg=with_budget(
                search_alg(cfg, sweep_dir=sweep_dir, concurrency=concurrency, name=name,
                           rank_key=derived.rank_key, searched=bool(derived.domains),
                           max_t=derived.max_t),
                budget=cfg.search.budget),
            scheduler=scheduler(cfg, derived),
            num_samples=1 if grid else cfg.search.num_trials,
            trial_name_creator=lambda t: f"trial_{t.trial_id}",
            trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
            # Workers keep the quantized base model between trials (trainables/warm.py).
            reuse_actors=cfg.resources.warm_start,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=cfg.storage.keep_checkpoints,
                checkpoint_score_attribute=metric,
                checkpoint_score_order=mode,
            ),
            failure_config=tune.FailureConfig(max_failures=cfg.failure.max_retries),
            callbacks=_callbacks(cfg, derived, spec, sweep_dir=sweep_dir, remote=remote),
            # No Ray status table: the StatusCallback logs the progress in the sweep's words.
            verbose=0,
        ),
    )
