"""Uploads a cloud sweep's driver files while the Tuner runs (see ``remote.py``)."""

from __future__ import annotations

import time
from pathlib import Path

from ray.tune import Callback

from ..sweepdir.remote import Mirror

PUSH_PERIOD_S = 10.0


class MirrorCallback(Callback):
    """Uploads the driver's files while the Tuner runs (Ray uploads its own)."""

    def __init__(self, mirror: Mirror, period_s: float = PUSH_PERIOD_S):
        self._mirror, self._period = mirror, period_s
        self._last = 0.0

    def __getstate__(self):  # the Tuner pickles its callbacks; the filesystem is rebuilt
        return {"uri": self._mirror.uri, "local": str(self._mirror.local), "period": self._period}

    def __setstate__(self, state):
        self._mirror = Mirror(state["uri"], Path(state["local"]))
        self._period, self._last = state["period"], 0.0

    def _push(self, *, force: bool = False) -> None:
        if force or time.monotonic() - self._last >= self._period:
            self._mirror.push()
            self._last = time.monotonic()

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        self._push()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._push(force=True)

    def on_experiment_end(self, trials: list, **info) -> None:
        self._push(force=True)
