"""How ``search.algorithm: optuna`` samples: the sampler, its start-up, what Optuna is told.

:data:`DEFAULT` is what a sweep gets; the other recipes are the candidates
``benchmarks/search_replay.py`` measured it against (docs/benchmarks.md, "Search replay"),
kept so the comparison can be rerun, and :data:`RAY_DEFAULT` is how the sweep searched
before (Ray's ``OptunaSearch`` as it is, univariate TPE).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SearchRecipe:
    name: str
    # FidelityOptunaSearch: ASHA's stops told as PRUNED, finished trials by their best value;
    # False: Ray's OptunaSearch (every trial COMPLETE with its last value)
    fidelity: bool = True
    multivariate: bool = False  # TPE: one joint density over all settings
    group: bool = False  # TPE multivariate: split by the settings each trial has
    constant_liar: bool = False  # TPE: running trials count as bad, so parallel ones differ
    # random start-up trials: a number, or None for max(2, min(5, num_trials // 3))
    n_startup: int | None = None

    def startup(self, num_trials: int) -> int:
        if self.n_startup is not None:
            return self.n_startup
        return max(2, min(5, num_trials // 3))

    def sampler_for(self, seed: int, num_trials: int):
        import warnings

        import optuna

        n = self.startup(num_trials)
        # Optuna marks multivariate, group and constant_liar experimental (a warning each time
        # one is made): the recipe is chosen and measured, not a user's choice
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=n, multivariate=self.multivariate,
                group=self.group and self.multivariate, constant_liar=self.constant_liar)


RAY_DEFAULT = SearchRecipe("tpe-ray", fidelity=False)
RECIPES = {r.name: r for r in [
    RAY_DEFAULT,
    SearchRecipe("tpe-fidelity"),
    SearchRecipe("tpe-multivariate", multivariate=True, group=True, constant_liar=True),
    SearchRecipe("tpe-multivariate-startup8", multivariate=True, group=True,
                 constant_liar=True, n_startup=8),
]}
# The TPE recipe that did best on the replay benchmark (docs/benchmarks.md, "Search replay"):
# 0.80 of random search's median compute to the top 5 %, at least as good as random at the
# demo's budget in 68 % of paired replays (random search + ASHA did better still: the demo
# uses search.algorithm: random).
DEFAULT = RECIPES["tpe-multivariate-startup8"]
