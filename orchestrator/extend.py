"""More trials for a sweep that has ended: ``qlora-sweep resume SWEEP_DIR search.num_trials=N``."""

from __future__ import annotations

from ray.tune.search.search_generator import SearchGenerator


class ExtendedSearch(SearchGenerator):
    """Ray's wrapper around the searcher, whose saved state (``search_gen_state-*``) would
    otherwise bring back the old number of trials and "finished" on restore."""

    def __init__(self, searcher, *, total: int):
        super().__init__(searcher)
        self._extend_to = total

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        if self._extend_to > self._total_samples:
            self._total_samples = self._extend_to
            self._finished = False
