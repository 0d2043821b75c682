"""``qlora-sweep resume SWEEP_DIR``: finish a sweep whose driver was stopped (Ctrl-C) or died.

Finished trials are kept as they are, never re-run; trials that were running go on from their
newest checkpoint (step count, optimizer, scheduler and RNG state restored); the Optuna study
continues (Ray's saved searcher state, backed by ``optuna.journal``); ASHA's rungs are refilled
from the trials' results (Ray does not save them); ``status.json`` continues.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from trainables.spec import TrialSpec

from ..config.plan import SweepPlan
from ..config.schema import SweepConfig
from ..errors import UserError
from ..observe.status import driver_gone, heartbeat_age
from ..sweepdir.folder import SweepDir, open_sweep
from .lost_trials import mark_lost
from .ray_session import on_worker
from .runner import Location, Phase, Start, execute
from .sweep import shares_data
from ..sweepdir.names import SWEEP_YAML

log = logging.getLogger(__name__)


def _histories(sweep: SweepDir, key: str) -> list[tuple[str, int, float, float]]:
    """Every reported ``(trial_id, step, value, timestamp)`` of the sweep, the value being
    what ASHA ranks on (``key``: the metric, or ``search_value``)."""
    out = []
    for row in sweep.leaderboard():
        for h in sweep.history(row["trial_id"]):
            value = h.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                out.append((row["trial_id"], int(h["step"]), float(value),
                            float(h.get("timestamp") or 0)))
    return out


def _steps_run(sweep: SweepDir) -> dict[str, int]:
    """Each trial's furthest step, as ``status.json`` records it (``search.budget``'s count;
    a lost trial's steps were spent too)."""
    return {row["trial_id"]: int(row.get("steps_run") or 0) for row in sweep.leaderboard()}


def _extension(sweep: SweepDir, overrides: list[str], *, allow_space_change: bool = False):
    """``(cfg, derived, extend_to, space_changed)``: the sweep's config with ``overrides``,
    which may only raise ``search.num_trials`` (Optuna) and, with ``allow_space_change``,
    change the search space; anything else would make the trials incomparable."""
    from ..config.loading import load_config

    config = str(sweep.path / SWEEP_YAML)
    cfg, derived = load_config(config, overrides, existing=True)
    if not overrides:
        return cfg, derived, None, False
    before, before_derived = load_config(config, [], existing=True)
    old, new = before.model_dump(), cfg.model_dump()
    old["search"].pop("num_trials")
    new["search"].pop("num_trials")
    space = {k: d.describe() for k, d in derived.domains.items()}
    space_changed = space != {k: d.describe() for k, d in before_derived.domains.items()}
    if space_changed and not allow_space_change:
        raise UserError(f"search_space: changed on resume ({' '.join(overrides)}). Trials "
                        f"searched in different spaces are not comparable, and the study "
                        f"would mislead its own search. Fix: start a new sweep with the new "
                        f"space (`qlora-sweep run`), resume with the space unchanged, or add "
                        f"--allow-space-change (a new study, seeded with the earlier trials "
                        f"that lie inside the new space).")
    old.pop("search_space")
    new.pop("search_space")
    changed = sorted(k for k in new if new[k] != old[k])
    if changed:
        raise UserError(f"resume: only search.num_trials may change (to add trials); these "
                        f"changed: {', '.join(changed)}. Fix: drop those overrides, or start a "
                        f"new sweep with them.")
    if cfg.search.algorithm != "optuna":
        raise UserError(f"search.num_trials = {cfg.search.num_trials}: adding trials on resume "
                        f"needs search.algorithm = optuna (this sweep uses "
                        f"{cfg.search.algorithm}). Fix: start a new sweep for more trials.")
    budget = (sweep.status() or {}).get("budget") or {}
    if budget and budget["spent"] >= budget["steps"]:
        raise UserError(f"search.num_trials = {cfg.search.num_trials}: the sweep's "
                        f"search.budget is spent ({budget['spent']} of {budget['steps']} "
                        f"steps), so no added trial would start (a budget cannot change on "
                        f"resume). Fix: start a new sweep with a larger search.budget.")
    started = sum(r["status"] != "lost" for r in sweep.leaderboard())
    if cfg.search.num_trials <= max(started, before.search.num_trials):
        raise UserError(f"search.num_trials = {cfg.search.num_trials}: the sweep already has "
                        f"{max(started, before.search.num_trials)} trials planned. Fix: give "
                        f"a larger number, e.g. search.num_trials="
                        f"{2 * before.search.num_trials}.")
    return cfg, derived, cfg.search.num_trials, space_changed


def _record_extension(sweep: SweepDir, cfg) -> None:
    """``sweep.yaml`` says how many trials the sweep now has, and in which space (the resolved
    config stays the one source of truth for ``resume``, ``status`` and ``promote``)."""
    import yaml

    path = sweep.path / SWEEP_YAML
    resolved = yaml.safe_load(path.read_text())
    resolved["search"]["num_trials"] = cfg.search.num_trials
    resolved["search_space"] = cfg.model_dump(mode="json", exclude_none=True)["search_space"]
    tmp = path.with_name(".sweep.yaml.tmp")
    tmp.write_text(yaml.safe_dump(resolved, sort_keys=False))
    tmp.replace(path)


def _check_resumable(sweep: SweepDir, *, extending: bool, force: bool = False) -> None:
    from ray.tune import Tuner

    status = sweep.status()
    if status is None or not Tuner.can_restore(str(sweep.path)):  # tuner.pkl is there
        raise UserError(f"SWEEP_DIR {sweep.where}: no trial was started (no status.json or "
                        f"tuner.pkl), so there is nothing to resume. Fix: start it again with "
                        f"`qlora-sweep run {sweep.path / SWEEP_YAML}` and another storage.name.")
    if status.get("state") == "finished" and not extending:
        raise UserError(f"SWEEP_DIR {sweep.where}: the sweep is finished; every trial has ended. "
                        f"Fix: nothing to resume; to add trials: qlora-sweep resume "
                        f"{sweep.where} search.num_trials=<more than now>.")
    if status.get("state") != "running":
        return
    gone = driver_gone(status)
    if gone:
        log.info(f"the sweep's {gone}: resuming it")
        return
    driver = status.get("driver") or {}
    beat = heartbeat_age(status)
    seen = (f", last heartbeat {beat[0]:.0f} s ago; it counts as gone after {beat[1]:.0f} s "
            f"without one" if beat else "")
    if force:
        log.info(f"resume --force: the sweep looked still running (driver pid "
                 f"{driver.get('pid')} on {driver.get('host')}{seen}); resuming anyway")
        return
    raise UserError(f"SWEEP_DIR {sweep.where}: the sweep is still running (driver pid "
                    f"{driver.get('pid')} on {driver.get('host')}{seen}). Fix: wait for it, or "
                    f"stop it (Ctrl-C) before resuming; if you know that driver is gone (its "
                    f"host died), add --force (two live drivers would overwrite each other's "
                    f"files).")


class ResumedSweep(Start):
    """A sweep that goes on from its sweep dir: the recorded baseline and tokenized data, the
    restored Tuner; with ``search.num_trials`` more trials, and with a changed space a new
    study seeded with the earlier trials inside it."""

    def __init__(self, sweep: SweepDir, *, extend_to: int | None, space_changed: bool):
        self.sweep, self.extend_to, self.space_changed = sweep, extend_to, space_changed
        self.study: str | None = None
        self.trials_before = sweep.trial_folders()
        self.config_before = (sweep.path / SWEEP_YAML).read_text()

    def location(self, cfg, derived) -> Location:
        sweep = self.sweep
        return Location(sweep.where.rsplit("/", 1)[0], sweep.name, sweep.path, sweep.remote)

    def baseline(self, phase: Phase) -> dict[str, Any]:
        sweep, derived = self.sweep, phase.derived
        counts: dict[str, int] = {}
        for row in sweep.leaderboard():
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        log.info(f"resuming {sweep.where}: " + ", ".join(f"{n} {s.replace('_', ' ')}"
                                                   for s, n in sorted(counts.items())))
        lost = mark_lost(sweep.path)
        if lost:
            log.info(f"{len(lost)} trial(s) started after Ray's last record of the sweep were lost "
                     f"with the driver ({', '.join(lost)}): their configurations start again as "
                     f"new trials")
        if self.space_changed:
            from .extend import carry_over, next_study_name, study_names
            from .tuner import param_space

            self.study = next_study_name(sweep.name, study_names(sweep.path))
            carried, finished = carry_over(sweep.path, new_study=self.study,
                                           mode=derived.mode, space=param_space(derived))
            log.info(f"search space changed: a new Optuna study ({self.study}) starts from the "
                     f"{carried} of {finished} finished trials that lie inside the new space")
        if self.extend_to:
            log.info(f"adding trials: {self.extend_to} in all, Optuna's study going on from the "
                     f"{sum(r['status'] != 'lost' for r in sweep.leaderboard())} it has")
            _record_extension(sweep, phase.cfg)
        try:
            phase.spec = tokenize_once(phase.cfg, derived, phase.spec, sweep.path,
                                       remote=sweep.remote)
        except BaseException:
            self.failed()
            raise
        return sweep.baseline or {}

    def tuner(self, phase: Phase, baseline: dict[str, Any]):
        from .tuner import restore_tuner

        sweep = self.sweep
        tuner = restore_tuner(phase.cfg, phase.derived, phase.spec,
                              sweep_dir=str(sweep.path),
                              histories=_histories(sweep, phase.derived.rank_key),
                              extend_to=self.extend_to, new_study=self.study,
                              remote=sweep.remote, steps_run=_steps_run(sweep))
        log.info(f"watch it:  qlora-sweep status {sweep.where} --watch")
        return tuner

    def failed(self) -> None:
        sweep = self.sweep
        if self.extend_to and sweep.trial_folders() == self.trials_before:
            # Nothing ran: the sweep is left as it was, to be extended again.
            (sweep.path / SWEEP_YAML).write_text(self.config_before)
            if self.study is not None:
                from .extend import drop_study

                drop_study(sweep.path, self.study)
            sweep.save()


def resume_sweep(path: str, overrides: list[str] = (), *, address: str | None = None,
                 allow_space_change: bool = False, force: bool = False) -> int:
    """Resume an interrupted sweep, or add trials to one (``search.num_trials=N``); returns
    the exit code as ``run`` does. ``force``: also a sweep whose driver still looks alive (a
    fresh heartbeat from a driver known to be gone)."""
    sweep = open_sweep(path)
    cfg, derived, extend_to, space_changed = _extension(
        sweep, list(overrides), allow_space_change=allow_space_change)
    _check_resumable(sweep, extending=extend_to is not None, force=force)
    start = ResumedSweep(sweep, extend_to=extend_to, space_changed=space_changed)
    return execute(start, cfg, derived, address=address)


def tokenize_once(cfg: SweepConfig, derived: SweepPlan, spec: TrialSpec,
                  sweep_dir: Path, remote=None) -> TrialSpec:
    """The tokenized data for the trials of a resumed sweep: the run's (``tokenized/``), or,
    when the sweep has none (or it cannot be read), tokenized now on a worker. ``remote``:
    the cloud sweep dir's mirror, ``sweep_dir`` its local copy."""
    if not shares_data(derived):
        return spec
    prepared = saved_data(sweep_dir, remote=remote)
    if prepared is None:
        from trainables.entry import prepare_data

        log.info("tokenizing the data for the trials ...")
        prepared = on_worker(cfg, prepare_data, spec, "tokenizing the data")
    return spec.replace(prepared_data=prepared)


def saved_data(sweep_dir: Path, *, remote=None) -> dict[str, Any] | None:
    """The run's tokenized data (``tokenized/``); None, with a note when it is damaged."""
    from ..sweepdir.names import TOKENIZED
    from ..sweepdir.tokenized import Unreadable, load

    if remote is not None:
        remote.pull(under=TOKENIZED)
    try:
        return load(sweep_dir)
    except Unreadable as err:
        # Nothing is lost: the rows are tokenized again from the data source, as by the run.
        log.info(f"note: the sweep's tokenized data cannot be read ({err}); tokenizing it again")
        return None
