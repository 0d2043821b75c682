"""ASHA's rungs as Ray computes them, without Ray (validation, the budget's sizing)."""

from __future__ import annotations


def asha_rungs(grace_period: int, max_t: int, reduction_factor: float) -> list[float]:
    """The steps at which ASHA compares trials (its milestones), lowest first, as Ray 2.60's
    ``async_hyperband._Bracket`` computes them (line for line, NumPy's log included, so that
    validation needs no Ray): ``grace_period x reduction_factor ** k`` for as many rungs as
    fit up to ``max_t``. A milestone need not be a whole step (``20 x 1.5 ** 3 = 67.5``), nor
    the last one ``max_t``; ASHA decides at a trial's first report at or after it.
    ``tests/test_compat.py`` fails if this ever differs from Ray's own bracket."""
    import numpy as np

    s = 0  # the bracket's index: qlora-sweep's ASHA has one bracket
    count = int(np.log(max_t / grace_period) / np.log(reduction_factor) - s + 1)
    rungs = [grace_period * reduction_factor ** (k + s) for k in range(count)]
    return [int(r) if float(r).is_integer() else float(r) for r in rungs]
