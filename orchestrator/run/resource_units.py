"""Ray's resource arithmetic, in the integers Ray itself counts in.

Ray 2.60 keeps every resource quantity as a fixed-point integer of ``1 / 10000`` units
(``ray._private.ray_constants.MIN_RESOURCE_GRANULARITY = 0.0001``) and truncates a request to
it: ``num_gpus=0.14286`` takes 1428 units, ``0.1667`` (``1666.9999...`` as a double) 1666 and
``0.0003`` 2 (measured on Ray 2.60: what ``ray.available_resources()`` shows after placing an
actor).
So a GPU share must be floored, never rounded: ``round(1/7, 4) = 0.1429`` and
``7 x 1429 > 10000``, so Ray fits 6 trials where 7 were planned. And a count of trials per node
is an integer division of units, never a float one (``1 // 0.2 == 4.0`` in floats).
``tests/test_compat.py`` fails when Ray's granularity changes.
"""

from __future__ import annotations

UNITS = 10_000  # Ray's fixed-point scale (1 / MIN_RESOURCE_GRANULARITY)


def units(quantity: float) -> int:
    """The units Ray charges for ``quantity`` (it truncates, as C++ does a double's cast)."""
    return int(quantity * UNITS)


def share_per_gpu(trials: int) -> float:
    """The largest GPU share of which at most ``trials`` fit on one GPU in Ray's units, and
    exactly ``trials`` wherever Ray's granularity allows it (up to 99 per GPU).

    Raises:
        ValueError: ``trials`` below 1.
    """
    if trials < 1:
        raise ValueError(f"trials per GPU must be 1 or more, got {trials}")
    need = UNITS // min(trials, UNITS)  # floor: trials x need <= UNITS; 1 unit at least
    if UNITS // need > trials:  # past 99 per GPU, the floor would fit one more than planned
        need += 1
    share = need / UNITS
    if units(share) != need:  # e.g. 3 / 10000 is 2.9999... units as a double
        share = (need + 0.5) / UNITS
    return share


def fits(capacity: float, request: float) -> int:
    """How many requests of ``request`` a capacity of ``capacity`` holds, in Ray's units."""
    need = units(request)
    return units(capacity) // need if need > 0 else 0
