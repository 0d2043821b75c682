"""The sweep plan: what the validated config implies, computed once and never changed.

``load_config`` returns it beside the config; pre-flight, the Tuner, the callbacks, the
leaderboard and resume read it instead of deriving the same facts again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .budget import BudgetPlan


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
    # the sweep.yaml of a sweep that has run (resume, promote): the checks that keep a new
    # sweep from breaking are warnings or left out, so what it made is not refused
    existing: bool = False
    # search.budget: what it pays for (config.budget); None without one
    budget: BudgetPlan | None = None
    # where each key's value came from: "<file> line N" or "command line (key=value)"
    sources: dict[tuple, str] = field(default_factory=dict, repr=False, compare=False)
    # search_space: auto — the space it built, with the reason for each setting
    # (search_spaces.auto.AutoSpace); None when the config wrote its space itself
    auto_space: Any = field(default=None, repr=False, compare=False)

    def locate(self, problems: list[str]) -> list[str]:
        """Each problem prefixed with where the value it names came from."""
        return [locate_problem(p, self.sources) for p in problems]


def key_path(key: str) -> tuple[str, ...]:
    """``a.b.c`` -> ``("a", "b", "c")``; a search-space entry's own name stays dotted."""
    parts = key.split(".")
    if parts[0] == "search_space" and len(parts) > 1:
        return ("search_space", ".".join(parts[1:]))
    return tuple(parts)


def source_of(loc: tuple, where: dict[tuple, str]) -> str | None:
    """Where the value at ``loc`` came from: its own entry, or a value set on the command
    line above it (``lora={r: 4}``); None when neither is known."""
    if loc in where:
        return where[loc]
    for n in range(len(loc) - 1, 0, -1):  # inside a value set on the command line
        if where.get(loc[:n], "").startswith("command line"):
            return where[loc[:n]]
    return None


def locate_problem(problem: str, where: dict[tuple, str]) -> str:
    """``problem`` prefixed with where the value it starts with came from (the dotted key it
    starts with, up to ``" "``, ``":"`` or ``"["``), when that is known."""
    key = re.match(r"[A-Za-z_][\w.]*", problem)
    origin = source_of(key_path(key.group(0).rstrip(".")), where) if key else None
    return f"{origin}: {problem}" if origin else problem
