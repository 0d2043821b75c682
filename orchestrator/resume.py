"""``qlora-sweep resume SWEEP_DIR``: finish a sweep whose driver was stopped (Ctrl-C) or died.

Finished trials are kept as they are, never re-run; trials that were running go on from their
newest checkpoint (step count, optimizer, scheduler and RNG state restored); the Optuna study
continues (Ray's saved searcher state, backed by ``optuna.journal``); ASHA's rungs are refilled
from the trials' results (Ray does not save them); ``status.json`` continues.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from .errors import UserError
from .status import driver_gone
from .sweep_dir import SweepDir, open_sweep


def _histories(sweep: SweepDir) -> list[tuple[str, int, float, float]]:
    """Every reported ``(trial_id, step, metric value, timestamp)`` of the sweep."""
    out = []
    for row in sweep.leaderboard():
        for h in sweep.history(row["trial_id"]):
            value = h.get(sweep.metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                out.append((row["trial_id"], int(h["step"]), float(value),
                            float(h.get("timestamp") or 0)))
    return out


def _check_resumable(sweep: SweepDir) -> None:
    status = sweep.status()
    if status is None or not (sweep.path / "tuner.pkl").is_file():
        raise UserError(f"SWEEP_DIR {sweep.path}: no trial was started (no status.json or "
                        f"tuner.pkl), so there is nothing to resume. Fix: start it again with "
                        f"`qlora-sweep run {sweep.path / 'sweep.yaml'}` and another storage.name.")
    if status.get("state") == "finished":
        raise UserError(f"SWEEP_DIR {sweep.path}: the sweep is finished; every trial has ended. "
                        f"Fix: nothing to resume; see `qlora-sweep status {sweep.path}`.")
    if status.get("state") == "running" and not driver_gone(status):
        driver = status.get("driver") or {}
        raise UserError(f"SWEEP_DIR {sweep.path}: the sweep is still running (driver pid "
                        f"{driver.get('pid')} on {driver.get('host')}). Fix: wait for it, or "
                        f"stop it (Ctrl-C) before resuming.")


def resume_sweep(path: str, *, address: str | None = None, out=print) -> int:
    """Resume an interrupted sweep; returns the exit code as ``run`` does."""
    from .loading import load_config
    from .sweep import fit_and_finish, init_ray, preflight, quiet_ray_output

    started = time.monotonic()
    sweep = open_sweep(path)
    _check_resumable(sweep)
    cfg, derived = load_config(str(sweep.path / "sweep.yaml"), [])
    settings = preflight(cfg, derived)
    if cfg.storage.max_gb:
        settings["disk_budget"] = {"path": str(sweep.path),
                                   "max_bytes": int(cfg.storage.max_gb * 1e9)}
    quiet_ray_output()
    started_ray = init_ray(address)
    import ray

    try:
        from .tuner import restore_tuner

        counts = {}
        for row in sweep.leaderboard():
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        out(f"resuming {sweep.path}: " + ", ".join(f"{n} {s.replace('_', ' ')}"
                                                   for s, n in sorted(counts.items())))
        tuner = restore_tuner(cfg, derived, settings, sweep_dir=str(sweep.path),
                              histories=_histories(sweep))
        out(f"watch it:  qlora-sweep status {sweep.path} --watch")
        return fit_and_finish(cfg, derived, tuner, sweep_dir=Path(sweep.path),
                              baseline=sweep.baseline or {}, started=started, out=out)
    finally:
        if started_ray:
            ray.shutdown()
