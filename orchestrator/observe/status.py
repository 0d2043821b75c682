"""``qlora-sweep status SWEEP_DIR``: the leaderboard of a running or finished sweep.

Everything comes from the sweep dir (``status.json``, ``baseline.json``), never from the
driver's memory, so it works from another terminal or machine, during and after the sweep.
"""

from __future__ import annotations

import csv
import io
import os
import socket
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

from ..errors import UserError
from ..sweepdir.results import (points_change, relative_change, render_table, strict_dumps,
                                task_values, vs_base)
from ..sweepdir.folder import SweepDir, open_sweep



FORMATS = ("table", "json", "csv")
_ORDER = ("running", "pending", "paused", "completed", "stopped_early", "errored", "interrupted")


def _age(stamp: str) -> str:
    return _span(_seconds_since(stamp))


# A driver whose heartbeat is older than this many of its periods is gone: a few periods, so
# a Tune loop busy for a while (a long checkpoint upload) is not mistaken for a dead one.
STALE_AFTER_BEATS = 5


def _seconds_since(stamp: str, now: float | None = None) -> float:
    then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return (now if now is not None else time.time()) - then.timestamp()


def _span(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min"


def heartbeat_age(status: dict[str, Any], now: float | None = None) -> tuple[float, float] | None:
    """``(seconds since the driver's last heartbeat, the stale limit)``; None for a sweep
    written before heartbeats (or not running)."""
    driver = status.get("driver") or {}
    try:
        age = _seconds_since(driver["heartbeat_at"], now)
        limit = STALE_AFTER_BEATS * float(driver["heartbeat_every_s"])
    except (KeyError, TypeError, ValueError):
        return None
    return age, limit


def driver_gone(status: dict[str, Any], now: float | None = None) -> str | None:
    """Why a sweep marked running has no driver any more, or None while it may still run.

    On the driver's own host its process id answers, and a live one wins over a late
    heartbeat (a driver whose loop stalls, or that was suspended with Ctrl-Z, is not gone: a
    second driver would overwrite its files; an id taken over by another process, as in a
    restarted container, is what ``resume --force`` is for). On any other host only the
    heartbeat it writes into ``status.json`` can answer: one older than ``STALE_AFTER_BEATS``
    periods means gone. Clocks are compared across hosts, so they must agree to well within
    that limit (NTP).
    """
    driver = status.get("driver") or {}
    if status.get("state") != "running":
        return None
    who = f"driver pid {driver.get('pid')} on {driver.get('host')}"
    if driver.get("host") == socket.gethostname():
        try:
            os.kill(int(driver["pid"]), 0)
        except ProcessLookupError:
            return f"{who} is no longer running"
        except (PermissionError, KeyError, ValueError):
            pass
        else:
            return None
    beat = heartbeat_age(status, now)
    if beat is not None and beat[0] > beat[1]:
        return (f"{who} wrote no heartbeat for {_span(beat[0])} (it writes one every "
                f"{_span(beat[1] / STALE_AFTER_BEATS)}; gone after {_span(beat[1])})")
    return None


def label_view(sweep: SweepDir, trial_id: str, step: int | None) -> dict[str, Any] | None:
    """Per label scorer, the trial's confusion matrix at ``step``, each label's accuracy and
    the share of answers that named a label; None without label scorers (or their record)."""
    import json

    from trainables.scoring import parse_rate, per_label

    best = sweep.best or {}
    if best.get("trial_id") == trial_id and best.get("step") == step and "confusion" in best:
        matrices = best["confusion"]
    else:  # a running sweep: the trial's report at that step
        at = next((h for h in sweep.history(trial_id) if h["step"] == step), {})
        raw = at.get("task_confusion")
        matrices = json.loads(raw) if isinstance(raw, str) and raw else None
    if not matrices:
        return None
    return {name: {"per_label": per_label(matrix), "parsed": parse_rate(matrix),
                   "confusion": matrix} for name, matrix in matrices.items()}


def per_label_text(view: dict[str, Any]) -> str:
    """"positive 90% (20), negative 50% (10); 95% of answers name a label"."""
    parts = [f"{label} {row['accuracy']:.0%} ({row['items']})"
             for label, row in sorted(view["per_label"].items(), key=lambda kv: -kv[1]["items"])]
    parsed = view.get("parsed")
    return ", ".join(parts) + (f"; {parsed:.0%} of answers name a label" if parsed is not None
                               else "")


def summary(sweep: SweepDir) -> dict[str, Any]:
    """What ``status`` shows, as data: the sweep's state, counts, best so far, every trial."""
    status = sweep.status() or {}
    rows = sweep.leaderboard()
    if not rows:
        raise UserError(f"SWEEP_DIR {sweep.where}: no trial has started yet (the sweep may still "
                        f"be evaluating the base model). Fix: run this again in a moment "
                        f"(`qlora-sweep status --watch` waits for it).")
    metric = sweep.metric
    base = (sweep.baseline or {}).get(metric)
    scored = [r for r in rows if r[f"best_{metric}"] is not None and r["status"] != "errored"]
    best = None
    if scored:
        top = scored[0]
        value, share = top[f"best_{metric}"], sweep.share
        # An accuracy is compared in points (also with a base of 0), an error relatively.
        best = {"trial_id": top["trial_id"], "value": value, "step": top["best_step"],
                "baseline": base,
                "relative_to_baseline": None if share else relative_change(value, base),
                "points_vs_baseline": points_change(value, base) if share else None,
                "vs_base": vs_base(value, base, share=share)}
        labels = label_view(sweep, top["trial_id"], top["best_step"])
        if labels:  # label scorers: the per-label accuracy behind the one number
            best["labels"] = labels
    state = status.get("state", "finished")
    gone = driver_gone(status)
    if gone:
        state = "interrupted"
    return {"sweep": sweep.name, "path": sweep.where, "state": state,
            "updated_at": status.get("updated_at"), "driver": status.get("driver"),
            "driver_gone": gone,
            "metric": metric, "mode": sweep.mode, "planned_trials": status.get("planned_trials"),
            "budget": budget_of(status),
            "counts": dict(Counter(r["status"] for r in rows)), "baseline": base, "best": best,
            "trials": rows}


def budget_of(status: dict[str, Any]) -> dict[str, Any] | None:
    """status.json's ``search.budget`` count, with its line ("spent S of B steps (P %)"); None
    for a sweep without a budget."""
    from ..config.budget import budget_line

    recorded = status.get("budget")
    if not recorded:
        return None
    steps, spent = int(recorded["steps"]), int(recorded["spent"])
    return {"steps": steps, "spent": spent, "line": budget_line(spent, steps)}


def render(sweep: SweepDir, data: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return strict_dumps(data, indent=2)
    searched = sweep.searched
    if fmt == "csv":
        buf = io.StringIO()
        tasks = [k for k in dict.fromkeys(k for t in data["trials"] for k in task_values(t))
                 if k != data["metric"]]
        fields = ["trial_id", "status", *searched, f"best_{data['metric']}", "best_step",
                  "steps_run", "rung", *tasks, "error"]
        writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(data["trials"])
        return buf.getvalue().rstrip("\n")
    return _text(sweep, data, searched)


def _text(sweep: SweepDir, data: dict[str, Any], searched: list[str]) -> str:
    state = data["state"]
    if state == "running" and data["updated_at"]:
        state += f" (last update {_age(data['updated_at'])} ago)"
    elif state == "interrupted" and data.get("driver_gone"):
        state += (f" (the driver is gone: {data['driver_gone']}; the finished trials and their "
                  f"checkpoints are kept; resume it with: qlora-sweep resume {data['path']})")
    elif state == "interrupted":
        state += (" (the driver stopped before the trials ended; the finished trials and their "
                  "checkpoints are kept)")
    counts = data["counts"]
    parts = [f"{counts[s]} {s.replace('_', ' ')}" for s in _ORDER if counts.get(s)]
    planned = data["planned_trials"]
    started = sum(counts.values())
    budget = data.get("budget")
    spent = budget is not None and budget["spent"] >= budget["steps"]
    if planned and data["state"] == "running" and planned > started and not spent:
        parts.append(f"{planned - started} not yet proposed")
    lines = [f"sweep {data['sweep']}: {state}", f"trials: {', '.join(parts)}"]
    if budget is not None:
        still = "; no new trials" if spent and data["state"] == "running" else ""
        lines.append(f"budget: {budget['line']}{still}")
    best, metric = data["best"], data["metric"]
    if best:
        vs = ""
        if best["baseline"] is not None:
            vs = f" (base model {best['baseline']:.4f}"
            vs += f", {best['vs_base']})" if best["vs_base"] != "-" else ")"
        lines.append(f"best so far: trial {best['trial_id']}, {metric} {best['value']:.4f} at "
                     f"step {best['step']}{vs}")
    for name, view in ((best or {}).get("labels") or {}).items():
        lines.append(f"  {name}, per label (accuracy, items): {per_label_text(view)}")
    lines += ["", render_table(data["trials"], metric=metric, searched=searched,
                               baseline=sweep.baseline, share=sweep.share).rstrip("\n")]
    return "\n".join(lines)


def _write(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def show_status(path: str, *, fmt: str = "table", watch: bool = False,
                interval: float = 10.0) -> int:
    """Print the status once, or with ``watch`` every ``interval`` seconds until the sweep ends."""
    while True:
        sweep = open_sweep(path, files="top")
        try:
            data = summary(sweep)
        except UserError:
            if not watch:
                raise
            data = None
        if data is not None:
            # The status is the command's data: written to stdout itself, not logged, so a
            # reader that closes the pipe ends the command quietly (the CLI catches the
            # BrokenPipeError) instead of surfacing in a logging handler.
            if watch and sys.stdout.isatty():
                _write("\x1b[2J\x1b[H" + render(sweep, data, fmt))
            else:
                _write(render(sweep, data, fmt))
            if not watch or data["state"] != "running":
                return 0
            if not sys.stdout.isatty():
                _write("")
        time.sleep(interval)
