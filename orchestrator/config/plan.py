"""The sweep plan: what the validated config implies, computed once and never changed.

``load_config`` returns it beside the config; pre-flight, the Tuner, the callbacks, the
leaderboard and resume read it instead of deriving the same facts again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SweepPlan:
    """Facts derived from a valid config."""

    domains: dict[str, Any] = field(repr=False)  # searched name -> search_spaces Domain
    mode: str  # "min" or "max": the direction of search.metric
    max_t: int  # ASHA's last rung: scheduler.max_t, else training.max_steps
    grace_period: int  # ASHA's first rung
    # scheduler.early_eval_samples: evaluations before this step use the eval subset, and
    # ASHA and the searcher rank on rank_key (search_value) instead of search.metric
    full_eval_from: int | None
    rank_key: str  # what ASHA and the searcher rank on
    train_path: str | None  # absolute path of a local data.train (None: a Hub dataset)
    eval_path: str | None  # the same for data.eval
    config_path: str = ""  # the config file, absolute
    # where each key's value came from: "<file> line N" or "command line (key=value)"
    sources: dict[tuple, str] = field(default_factory=dict, repr=False, compare=False)

    def locate(self, problems: list[str]) -> list[str]:
        """Each problem prefixed with where the value it names came from."""
        return [locate_problem(p, self.sources) for p in problems]


def locate_problem(problem: str, where: dict[tuple, str]) -> str:
    """``problem`` prefixed with where the value it starts with came from (the longest key
    path it names), when it names one."""
    best = None
    for path in where:
        dotted = ".".join(str(p) for p in path)
        if (problem.startswith(dotted) and problem[len(dotted):len(dotted) + 1] in (" ", ":", "[")
                and (best is None or len(dotted) > len(best[0]))):
            best = (dotted, path)
    return f"{where[best[1]]}: {problem}" if best else problem
