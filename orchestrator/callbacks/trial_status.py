"""``status.json`` in the sweep dir: every trial's state, kept current while the sweep runs;
and the console's progress lines, in the same words.

The driver rewrites the file (atomically) after trial events, at most every second, so
``qlora-sweep status`` can read a running sweep from another terminal or machine, and after the
driver is gone. Statuses: ``pending``, ``running``, ``paused``, ``completed``,
``stopped_early`` (with the ASHA rung it was stopped at), ``errored`` (with the first line of
its error). The console gets a line when a trial starts and ends, and a summary at most every
``PROGRESS_EVERY_S`` while trials run.

The driver's entry carries a heartbeat (``heartbeat_at``), refreshed at least every
``HEARTBEAT_EVERY_S`` while Tune's loop runs, even when no trial reports: a driver on another
host (a head node that crashed, a new KubeRay head pod) cannot be asked whether its process
lives, so ``status`` and ``resume`` call it gone once its heartbeat is stale
(``observe.status.driver_gone``). The file goes through the sweep dir's storage like the
others (a cloud sweep dir's mirror uploads it).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from search_spaces.domains import short_name
from trainables.metrics import SEARCH_VALUE

from ..config.budget import budget_line, spent_steps
from ..sweepdir.results import best_of, error_summary, task_values, write_json
from ..sweepdir.names import STATUS

log = logging.getLogger(__name__)

WRITE_EVERY_S = 1.0
HEARTBEAT_EVERY_S = 30.0
PROGRESS_EVERY_S = 30.0
_RAY_STATES = {"PENDING": "pending", "RUNNING": "running", "PAUSED": "paused"}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _clock(started: float) -> str:
    """Time since ``started`` (``time.monotonic()``), as h:mm:ss."""
    seconds = int(time.monotonic() - started)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def sweep_interrupted(trial_states: list[str], planned: int | None, *,
                      budget_spent: bool = False) -> bool:
    """Whether Tune stopped before the sweep's end: a trial not ended, or trials not started
    (which ``search.budget``, once spent, leaves unstarted on purpose)."""
    unfinished = any(state not in ("TERMINATED", "ERROR") for state in trial_states)
    return unfinished or (planned is not None and len(trial_states) < planned
                          and not budget_spent)


def mark_interrupted(sweep_dir: Path) -> None:
    """After ``Tuner.fit``: a sweep Tune did not see to its end (Ctrl-C, a crash) says so."""
    path = sweep_dir / STATUS
    if not path.is_file():
        return
    data = json.loads(path.read_text())
    if data.get("state") != "running":
        return
    data.update(state="interrupted", updated_at=_now())
    for trial in data["trials"]:
        if trial["status"] in ("running", "pending", "paused"):
            trial["status"] = "interrupted"
    write_json(path, data)


def _error_text(trial) -> str | None:
    """The trial's error: Ray writes it on the driver first (``trial.error_file``) and copies it
    to the storage (where ``trial.get_error()`` reads) only later."""
    local = trial.error_file
    if local and os.path.isfile(local):
        return Path(local).read_text()
    return trial.get_error()


class StatusCallback(Callback):
    """Keeps ``status.json`` current; a resumed sweep continues the same file."""

    def __init__(self, sweep_dir: Path, *, metric: str, mode: str, searched: list[str],
                 max_steps: int, planned: int | None, rungs: list[int],
                 budget: int | None = None):
        self._path = Path(sweep_dir) / STATUS
        self._metric, self._searched, self._max_steps = metric, searched, max_steps
        self._mode, self._better = mode, (min if mode == "min" else max)
        self._rungs, self._planned = rungs, planned
        self._budget = budget  # search.budget, in training steps
        self._trials: dict[str, dict[str, Any]] = {}
        self._data: dict[str, Any] = {}
        self._signature: tuple = ()
        self._written_at = 0.0  # time.monotonic() of the last write
        self._dirty = False

    def setup(self, **info) -> None:
        # Here, not in __init__: the Tuner pickles its callbacks, and a resumed sweep must
        # continue the file as it is now.
        self._staging_cleared = False
        self._started_at = self._progress_at = time.monotonic()
        previous = json.loads(self._path.read_text()) if self._path.is_file() else {}
        self._trials = {t["trial_id"]: t for t in previous.get("trials", [])}
        self._data = {
            "sweep": self._path.parent.name, "state": "running",
            "started_at": previous.get("started_at", _now()), "updated_at": _now(),
            "driver": {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat_at": _now(),
                       "heartbeat_every_s": HEARTBEAT_EVERY_S},
            "metric": self._metric, "mode": self._mode, "max_steps": self._max_steps,
            "searched": self._searched, "planned_trials": self._planned,
            "asha_rungs": self._rungs, "trials": [],
        }
        if self._budget is not None:
            self._data["budget"] = {"steps": self._budget, "spent": self._spent()}
        self._write(now=True)

    def _entry(self, trial) -> dict[str, Any]:
        entry = self._trials.get(trial.trial_id)
        if entry is None:
            entry = self._trials[trial.trial_id] = {
                "trial_id": trial.trial_id, "status": "pending",
                "config": {k: trial.config.get(k) for k in self._searched},
                "steps_run": 0, "best_value": None, "best_step": None, "last_value": None,
                "rung": None, "error": "", "started_at": None, "ended_at": None,
                "retries": 0, "last_failure": "", "pid": None, "node_ip": None, "node_id": None,
                "checkpoint_step": None,
            }
        return entry

    def _write(self, *, now: bool = False) -> None:
        """Rewrite the file, at most every ``WRITE_EVERY_S`` unless ``now``: a sweep of many
        short trials would otherwise spend its time rewriting it (benchmarks/scale.py)."""
        self._dirty = True
        if not now and time.monotonic() - self._written_at < WRITE_EVERY_S:
            return  # written by a later event, or at the latest by on_step_end
        self._data["updated_at"] = _now()
        self._data["trials"] = list(self._trials.values())
        if self._budget is not None:
            self._data["budget"]["spent"] = self._spent()
        self._beat()

    def _spent(self) -> int:
        """search.budget's count: each trial's furthest step, summed (run/budget.py)."""
        return spent_steps({t: e["steps_run"] for t, e in self._trials.items()})

    def _beat(self) -> None:
        """Write the file with a fresh heartbeat (``updated_at`` stays the last trial event)."""
        self._data["driver"]["heartbeat_at"] = _now()
        write_json(self._path, self._data)
        self._written_at, self._dirty = time.monotonic(), False

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        # A restored Tuner copies the sweep dir's *.json into Ray's staging folder and uploads
        # that folder to the sweep dir with every snapshot: its copy of this file, as it was
        # when the sweep was restored, would overwrite the live one. Ours is written here.
        if getattr(self, "_staging_cleared", True) or not trials:
            return
        self._staging_cleared = True
        staging = getattr(trials[0].storage, "experiment_driver_staging_path", None)
        if staging:
            Path(staging, STATUS).unlink(missing_ok=True)

    def _best(self) -> dict[str, Any] | None:
        scored = sorted((t for t in self._trials.values() if t.get("best_value") is not None),
                        key=lambda t: t["trial_id"])  # equal values: the smaller id, as status
        if not scored:
            return None
        sign = 1.0 if self._mode == "max" else -1.0
        return max(scored, key=lambda t: sign * t["best_value"])  # the first of equals

    def _progress(self) -> None:
        """One line: how many trials run and have ended, and the best value so far."""
        now = time.monotonic()
        if now - self._progress_at < PROGRESS_EVERY_S:
            return
        self._progress_at = now
        counts: dict[str, int] = {}
        for entry in self._trials.values():
            counts[entry["status"]] = counts.get(entry["status"], 0) + 1
        if not counts.get("running"):
            return
        done = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(counts.items())
                         if s != "running")
        best = self._best()
        line = f"[{_clock(self._started_at)}] {counts['running']} running"
        line += f"; {done}" if done else ""
        if best is not None:
            line += (f"; best {self._metric} {best['best_value']:.4g} (trial "
                     f"{best['trial_id']}, step {best['best_step']})")
        if self._budget is not None:
            line += f"; budget {budget_line(self._spent(), self._budget)}"
        log.info(line)

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        self._progress()
        # Trials the searcher has created but Ray has not started are listed as pending.
        signature = tuple((t.trial_id, t.status) for t in trials)
        if signature == self._signature:
            if self._dirty:
                self._write()
            elif time.monotonic() - self._written_at >= HEARTBEAT_EVERY_S:
                self._beat()  # nothing reported for a while: say the driver still lives
            return
        self._signature = signature
        for trial in trials:
            entry = self._entry(trial)
            if trial.status in _RAY_STATES and entry["status"] in ("pending", "running", "paused"):
                entry["status"] = _RAY_STATES[trial.status]
        self._write()

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        entry = self._entry(trial)
        again = entry["started_at"] is not None
        entry.update(status="running", started_at=entry["started_at"] or _now(), ended_at=None,
                     error="")
        values = ", ".join(f"{short_name(k)}={_value(v)}" for k, v in entry["config"].items())
        if again:  # after its worker failed, or on resume: from its newest checkpoint
            log.info(f"trial {trial.trial_id} restarted from its newest checkpoint")
        else:
            log.info(f"trial {trial.trial_id} started{': ' + values if values else ''}")
        self._write()

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        entry = self._entry(trial)
        step = int(result.get("step", 0))
        value = result.get(self._metric)
        entry.update(status="running", steps_run=max(entry["steps_run"], step),
                     pid=result.get("pid"), node_ip=result.get("node_ip"),
                     node_id=result.get("node_id"))
        if isinstance(value, (int, float)) and math.isfinite(value):
            entry["last_value"] = float(value)
            known = (None if entry["best_value"] is None
                     else (entry["best_value"], entry["best_step"]))
            # The one rule for the best step (results.best_of): equal values, the later step.
            if best_of([v for v in (known, (float(value), step)) if v], mode=self._mode) != known:
                entry.update(best_value=float(value), best_step=step,
                             task=task_values(result))  # the answers' metrics at that step
        else:  # scheduler.early_eval_samples: an evaluation on the eval subset
            ranked = result.get(SEARCH_VALUE)
            if isinstance(ranked, (int, float)) and math.isfinite(ranked):
                seen = entry.get("subset_value")
                entry["subset_value"] = (float(ranked) if seen is None
                                         else float(self._better(seen, ranked)))
        self._write()

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        # The trial's worker failed; Ray restarts it from its newest checkpoint.
        entry = self._entry(trial)
        entry["retries"] = entry.get("retries", 0) + 1
        entry["last_failure"] = error_summary(_error_text(trial))
        self._write()

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info) -> None:
        """The step of the trial's newest checkpoint Ray has recorded (where a restart goes
        on from)."""
        step = (trial.last_result or {}).get("step")
        if step is not None:
            self._entry(trial)["checkpoint_step"] = int(step)
            self._write()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        entry = self._entry(trial)
        if entry["steps_run"] >= self._max_steps:
            entry["status"] = "completed"
        else:
            entry["status"] = "stopped_early"
            passed = [r for r in self._rungs if r <= entry["steps_run"]]
            entry["rung"] = passed[-1] if passed else None
        entry["ended_at"] = _now()
        how = ("completed" if entry["status"] == "completed" else
               f"stopped early at step {entry['steps_run']}")
        best = (f"best {self._metric} {entry['best_value']:.4g} at step {entry['best_step']}"
                if entry["best_value"] is not None else f"no {self._metric}")
        log.info(f"trial {trial.trial_id} {how}: {best}")
        self._write()

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        entry = self._entry(trial)
        entry.update(status="errored", ended_at=_now(), error=error_summary(_error_text(trial)))
        log.info(f"trial {trial.trial_id} errored: {entry['error']}")
        self._write()

    def on_experiment_end(self, trials: list, **info) -> None:
        # Tune also ends the experiment on Ctrl-C, with trials still unfinished.
        spent = self._budget is not None and self._spent() >= self._budget
        self._data["state"] = "interrupted" if sweep_interrupted(
            [t.status for t in trials], self._planned, budget_spent=spent) else "finished"
        if self._data["state"] == "interrupted":
            for entry in self._trials.values():
                if entry["status"] in ("running", "pending", "paused"):
                    entry["status"] = "interrupted"
        self._write(now=True)
