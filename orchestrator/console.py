"""Ray Tune's console table during ``run``: short value names, the metric, best first."""

from __future__ import annotations

from typing import Any

from ray.tune import CLIReporter

from search_spaces.domains import short_name

from .config import SweepConfig


class SweepReporter(CLIReporter):
    """Ray's ``CLIReporter`` naming the sweep dir where Ray names its driver-side staging
    folder (``Result logdir: /tmp/ray/...``), which is not where the results end up."""

    def __init__(self, *, sweep_dir: str, **kwargs):
        super().__init__(**kwargs)
        self._sweep_dir = sweep_dir

    def _print(self, msg: str) -> None:
        lines = [f"Sweep dir: {self._sweep_dir}" if line.startswith("Result logdir: ") else line
                 for line in msg.splitlines()]
        super()._print("\n".join(lines))


def progress_reporter(cfg: SweepConfig, derived: dict[str, Any], sweep_dir: str) -> SweepReporter:
    """The table with ``r``, ``alpha``, ``targets``, ``lr``..., the step, the metric and the train
    loss, every 30 s at most.

    Needs ``RAY_AIR_NEW_OUTPUT=0`` (set by ``run_sweep``): Ray's newer console output cannot
    rename columns and points TensorBoard at Ray's staging folder instead of the sweep dir.
    """
    metric, rank_key = cfg.search.metric, derived["rank_key"]
    columns = {"step": "step", metric: metric, "train_loss": "train_loss"}
    ranked = {}
    if rank_key != metric:  # scheduler.early_eval_samples: the Tuner has no metric to pass on
        columns[rank_key] = f"{metric} (ranked)"
        ranked = {"metric": rank_key, "mode": derived["mode"]}
    return SweepReporter(
        sweep_dir=sweep_dir,
        parameter_columns={k: short_name(k) for k in derived["domains"]},
        metric_columns=columns,
        sort_by_metric=True,  # metric and mode come from TuneConfig unless ranked here
        max_report_frequency=30, max_column_length=24, **ranked,
    )
