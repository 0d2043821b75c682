"""Ray Tune's console table during ``run``: short value names, the metric, best first."""

from __future__ import annotations

from search_spaces.domains import short_name
from trainables.compat.ray_private import sweep_dir_reporter

from ..config.plan import SweepPlan
from ..config.schema import SweepConfig


def progress_reporter(cfg: SweepConfig, derived: SweepPlan, sweep_dir: str):
    """The table with ``r``, ``alpha``, ``targets``, ``lr``..., the step, the metric and the train
    loss, every 30 s at most.

    Needs ``RAY_AIR_NEW_OUTPUT=0`` (set by ``run_sweep``): Ray's newer console output cannot
    rename columns and points TensorBoard at Ray's staging folder instead of the sweep dir.
    """
    metric, rank_key = cfg.search.metric, derived.rank_key
    columns = {"step": "step", metric: metric, "train_loss": "train_loss"}
    ranked = {}
    if rank_key != metric:  # scheduler.early_eval_samples: the Tuner has no metric to pass on
        columns[rank_key] = f"{metric} (ranked)"
        ranked = {"metric": rank_key, "mode": derived.mode}
    return sweep_dir_reporter(
        sweep_dir,
        parameter_columns={k: short_name(k) for k in derived.domains},
        metric_columns=columns,
        sort_by_metric=True,  # metric and mode come from TuneConfig unless ranked here
        max_report_frequency=30, max_column_length=24, **ranked,
    )
