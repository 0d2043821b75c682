"""More trials for a sweep that has ended: ``qlora-sweep resume SWEEP_DIR search.num_trials=N``,
and with ``--allow-space-change`` in a changed search space."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from ..sweepdir.names import JOURNAL


def study_names(sweep_dir: str | Path) -> list[str]:
    """The Optuna studies in the sweep's journal, oldest first (one per search space)."""
    from .tuner import optuna_storage

    if not (Path(sweep_dir) / JOURNAL).is_file():
        return []
    storage = optuna_storage(str(sweep_dir))
    names = [s.study_name for s in storage.get_all_studies()]
    return sorted(names, key=storage.get_study_id_from_name)  # ids grow with creation


def next_study_name(sweep_name: str, existing: list[str]) -> str:
    k = 2
    while f"{sweep_name}-space{k}" in existing:
        k += 1
    return f"{sweep_name}-space{k}"


def carry_over(sweep_dir: str | Path, *, new_study: str, space: dict[str, Any],
               mode: str) -> tuple[int, int]:
    """Start ``new_study`` (the changed space's) with every finished trial of the earlier
    studies whose values lie inside the new space, so TPE learns from them; returns
    ``(carried, finished)``."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from .tuner import optuna_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna_storage(str(sweep_dir))
    dists = OptunaSearch.convert_search_space(space)
    study = optuna.create_study(storage=storage, study_name=new_study, load_if_exists=True,
                                direction="minimize" if mode == "min" else "maximize")
    carried = finished = 0
    for name in study_names(sweep_dir):
        if name == new_study:
            continue
        for t in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False):
            if t.state != optuna.trial.TrialState.COMPLETE or t.value is None:
                continue
            finished += 1
            if set(t.params) != set(dists) or not all(
                    _inside(dists[k], v) for k, v in t.params.items()):
                continue
            study.add_trial(optuna.trial.create_trial(params=t.params, distributions=dists,
                                                      value=t.value))
            carried += 1
    return carried, finished


def _inside(dist, value) -> bool:
    """Whether ``value`` is one the distribution can propose (Optuna's own check is private)."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if not dist.low <= value <= dist.high:
        return False
    step = getattr(dist, "step", None)
    if step is None:
        return True
    steps = (value - dist.low) / step
    return abs(steps - round(steps)) < 1e-8


def drop_study(sweep_dir: str | Path, name: str) -> None:
    """Remove a study made for an extension that never started a trial."""
    import optuna

    from .tuner import optuna_storage

    optuna.delete_study(study_name=name, storage=optuna_storage(str(sweep_dir)))
