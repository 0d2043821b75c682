"""The promotion gate: does the challenger beat the champion on the Hub?

Both adapters are evaluated on the sweep's eval data (``promote.py``). Where the metric has
per-item values for both (a task metric but a custom scorer's: ``trainables/items.py``), the
challenger must win as every "beats" of the sweep is judged: a paired comparison over the same
eval items (``orchestrator/observe/paired.py``) whose 95 % confidence interval is clear of 0
in its favour, *and* by at least ``min_improvement`` on the means. Without them (the loss, a
custom scorer's metric, a champion evaluated before they were kept) the means alone decide,
as before, and the reason says so.
"""

from __future__ import annotations

import math
from typing import Any

from trainables.items import ITEMS

from ..config.schema import parse_improvement
from ..observe.paired import BETTER, compare_records, sentence


def judge(challenger: float, champion: float, *, mode: str, min_improvement: float | str
          ) -> tuple[bool, str]:
    """Whether the challenger wins, and the sentence that says why."""
    threshold, kind = parse_improvement(min_improvement)
    gain = (champion - challenger) if mode == "min" else (challenger - champion)
    relative = gain / abs(champion) if champion else math.inf
    needed = (f"{threshold:.2%} relative" if kind == "relative" else f"{threshold:g} absolute")
    achieved = relative if kind == "relative" else gain
    # "at least": an improvement equal to the bar clears it, also when float rounding of
    # champion - challenger lands a hair below it (1.0 - 0.9 < 0.1)
    wins = gain > 0 and (achieved >= threshold or math.isclose(achieved, threshold,
                                                                 rel_tol=1e-9, abs_tol=1e-12))
    return wins, (f"improvement {gain:+.4g} ({relative:+.2%}); required: better by at least "
                  f"{needed}")


def decide(challenger: dict[str, Any], champion: dict[str, Any], *, metric: str, mode: str,
           min_improvement: float | str, share: bool = False
           ) -> tuple[bool, str, dict[str, Any] | None]:
    """Whether the challenger wins, why, and the paired comparison (``Paired`` fields and its
    ``sentence``; None when the means alone decided).

    Args:
        challenger, champion: their evaluations' metrics (with ``task_items`` where the
            evaluation generated).
    """
    wins, reason = judge(challenger[metric], champion[metric], mode=mode,
                         min_improvement=min_improvement)
    paired = compare_records(challenger.get(ITEMS), champion.get(ITEMS), metric=metric,
                             mode=mode)
    if paired is None:
        why = ("it is not a mean over the eval items" if not metric.startswith("task_")
               else "no per-item values for both")
        return wins, (f"{reason}; {metric} compared by the means only ({why}), so noise is "
                      f"not accounted for"), None
    said = sentence(paired, ours="challenger", theirs="champion", share=share)
    record = {**paired.as_dict(), "sentence": said}
    if paired.verdict != BETTER:
        return False, (f"{reason}; item by item, {said}: the challenger must be better beyond "
                       f"noise"), record
    return wins, f"{reason}; item by item, {said}", record
