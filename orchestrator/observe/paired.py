"""Is one model better than another on the same eval items, or is the difference noise?

Two models answered the same eval items; each item has a value for each (an absolute error, a
1 for a right answer: ``trainables/items.py``), and the task metric is their mean. The
difference of the means is judged by a paired bootstrap: the per-item differences are
resampled with replacement (5000 times, seeded, so the same inputs give the same interval),
and the middle 95 % of the resampled mean differences is the confidence interval. When it
contains 0 the two are "not distinguishable"; otherwise the metric's mode says which side is
"better". Pairing removes what the items themselves contribute (hard items are hard for both
models), so it tells much smaller differences apart than comparing two unpaired means would.

Every "beats" the sweep states goes through here: the winner against the constant answer and
the base model (``verdict.py``), the winner against the runner-up (``winner.py``), and the
challenger against the champion on the Hub (``orchestrator/promotion/gate.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

RESAMPLES = 5000
CONFIDENCE = 0.95
SEED = 0
BETTER, WORSE, NOISE = "better", "worse", "not distinguishable"
# Resampled item indices drawn at once at most (memory: 8 bytes each).
_CHUNK = 2_000_000


@dataclass(frozen=True)
class Paired:
    """The comparison of ``ours`` with ``theirs`` on the items both have a value for."""

    metric: str
    mode: str  # "min": lower is better (an error); "max": higher is better (an accuracy)
    items: int  # items paired
    ours: float  # mean over those items
    theirs: float
    difference: float  # ours - theirs
    low: float  # the confidence interval of the difference
    high: float
    confidence: float
    verdict: str  # "better" / "worse" (ours, against theirs) / "not distinguishable"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(ours: Sequence[float | None], theirs: Sequence[float | None], *, mode: str,
            metric: str = "", resamples: int = RESAMPLES, seed: int = SEED,
            confidence: float = CONFIDENCE) -> Paired:
    """Paired bootstrap of ``ours - theirs`` over the items where both have a finite value.

    Args:
        ours, theirs: per-item values, in the same item order (None or NaN: not scored).
        mode: ``"min"`` when lower values are better, ``"max"`` when higher ones are.

    Raises:
        ValueError: the lists differ in length, no item has both values, or ``mode`` is
            neither ``"min"`` nor ``"max"``.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if len(ours) != len(theirs):
        raise ValueError(f"the two lists of per-item values must pair item by item, but have "
                         f"{len(ours)} and {len(theirs)} items")
    a = np.array([math.nan if v is None else float(v) for v in ours], dtype=float)
    b = np.array([math.nan if v is None else float(v) for v in theirs], dtype=float)
    both = np.isfinite(a) & np.isfinite(b)
    if not both.any():
        raise ValueError("no item has a value for both")
    a, b = a[both], b[both]
    diff = a - b
    n = len(diff)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, _CHUNK // n)
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        means[start:start + k] = diff[rng.integers(0, n, size=(k, n))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = (float(q) for q in np.quantile(means, [tail, 1 - tail]))
    if low <= 0 <= high:
        verdict = NOISE
    else:
        verdict = BETTER if (high < 0) == (mode == "min") else WORSE
    return Paired(metric=metric, mode=mode, items=n, ours=float(a.mean()),
                  theirs=float(b.mean()), difference=float(diff.mean()), low=low, high=high,
                  confidence=confidence, verdict=verdict)


def compare_records(ours: dict[str, Any] | None, theirs: dict[str, Any] | None, *,
                    metric: str, mode: str) -> Paired | None:
    """:func:`compare` on two per-item records (``trainables.items.record``); None when one
    has no values for ``metric`` or they are not over the same items (other references)."""
    if not ours or not theirs or ours.get("digest") != theirs.get("digest"):
        return None
    a, b = (ours.get("values") or {}).get(metric), (theirs.get("values") or {}).get(metric)
    if a is None or b is None or len(a) != len(b):
        return None
    try:
        return compare(a, b, mode=mode, metric=metric)
    except ValueError:
        return None


def _number(value: float, *, points: bool, sign: bool = False, digits: int = 4) -> str:
    if points:
        return f"{value * 100:{'+' if sign else ''}.1f}"
    return f"{value:{'+' if sign else ''}.{digits}g}"


def sentence(p: Paired, *, ours: str = "", theirs: str, share: bool = False) -> str:
    """``price_mae: winner 36.27 vs constant answer 156.8: -120.5 (95 % CI -131 to -110) over
    80 items: better`` (``ours="winner"``). ``share``: the metric is a share (an
    accuracy), the difference is said in percentage points."""
    name = p.metric.removeprefix("task_")
    unit = " pts" if share else ""
    values = (f"{_number(p.ours, points=False)} vs {theirs} {_number(p.theirs, points=False)}")
    return (f"{name}: {(ours + ' ') if ours else ''}{values}: "
            f"{_number(p.difference, points=share, sign=True)}{unit} "
            f"({p.confidence * 100:g} % CI {_number(p.low, points=share, sign=True, digits=3)} "
            f"to {_number(p.high, points=share, sign=True, digits=3)}{unit}) over {p.items} "
            f"items: "
            f"{p.verdict}")
