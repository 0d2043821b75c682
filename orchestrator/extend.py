"""More trials for a sweep that has ended: ``qlora-sweep resume SWEEP_DIR search.num_trials=N``,
and with ``--allow-space-change`` in a changed search space."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.search.search_generator import SearchGenerator
from ray.tune.utils.util import _load_newest_checkpoint


class ExtendedSearch(SearchGenerator):
    """Ray's wrapper around the searcher, whose saved state (``search_gen_state-*``) would
    otherwise bring back the old number of trials and "finished" on restore.

    ``space``: the search space changed and ``searcher`` is a new one (a new study); the old
    searcher's state is not restored, and the experiment's config becomes the new space."""

    def __init__(self, searcher, *, total: int, space: dict | None = None):
        super().__init__(searcher)
        self._extend_to = total
        self._fresh = space is not None
        self._space = space

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        if self._fresh:  # a restored run adds no configurations: the experiment is the saved one
            self._experiment.spec["config"] = dict(self._space)
        if self._extend_to > self._total_samples:
            self._total_samples = self._extend_to
            self._finished = False

    def restore_from_dir(self, dirpath: str) -> None:
        if not self._fresh:
            return super().restore_from_dir(dirpath)
        state = _load_newest_checkpoint(dirpath, self.CKPT_FILE_TMPL.format("*"))
        if state:
            self.set_state(state)


def study_names(sweep_dir: str | Path) -> list[str]:
    """The Optuna studies in the sweep's journal, oldest first (one per search space)."""
    from .tuner import optuna_storage

    if not (Path(sweep_dir) / "optuna.journal").is_file():
        return []
    studies = optuna_storage(str(sweep_dir)).get_all_studies()
    return [s.study_name for s in sorted(studies, key=lambda s: s._study_id)]


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
    try:
        return dist._contains(dist.to_internal_repr(value))
    except (ValueError, TypeError):
        return False


def drop_study(sweep_dir: str | Path, name: str) -> None:
    """Remove a study made for an extension that never started a trial."""
    import optuna

    from .tuner import optuna_storage

    optuna.delete_study(study_name=name, storage=optuna_storage(str(sweep_dir)))
