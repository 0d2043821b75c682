"""One runner for ``run`` and ``resume``: the phases every sweep goes through, in order.

    prepare    pre-flight (data, model, storage, custom scorers) and the disk budget, with
               what the start checks itself first (``Start.prepare``); Ray starts or is joined
    resources  ``gpu: auto`` resolved, the trials' request checked against the cluster
    baseline   a new sweep evaluates the base model, tokenizes the data and writes its sweep
               dir; a resumed one reads them back (``Start.baseline``)
    tuner      a new Tuner, or the saved one restored (``Start.tuner``)
    fit        the trials; then the leaderboard, ``best.json``, the verdict, the promotion

``run`` and ``resume`` differ only in their :class:`Start`:
:class:`~orchestrator.run.sweep.NewSweep` and :class:`~orchestrator.run.resume.ResumedSweep`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.items import ITEMS
from trainables.spec import TrialSpec

from ..config.preflight import preflight_report, require_local_fit
from ..config.plan import SweepPlan
from ..config.schema import SweepConfig
from ..errors import INTERRUPTED_EXIT, RUNTIME_EXIT, UserError
from ..sweepdir.remote import Mirror
from ..sweepdir.results import (best_record, is_share, render_table, trial_rows, usable_rows,
                                vs_base, write_json, write_leaderboard)
from .cluster import check_cluster
from .ray_session import init_ray, quiet_ray_output
from ..sweepdir.names import BEST, LEADERBOARD

log = logging.getLogger(__name__)


@dataclass
class Location:
    """Where a sweep's files go. For a cloud ``storage.path`` Ray writes trials to ``remote``
    and the driver writes its own files to ``sweep_dir``, a local mirror uploaded to it."""

    storage_path: str  # Ray's storage_path: a folder or a URI
    name: str
    sweep_dir: Path  # the folder the driver writes in
    remote: Mirror | None = None

    @property
    def where(self) -> str:
        """The sweep dir as users name it: a path, or the URI."""
        return self.remote.uri if self.remote else str(self.sweep_dir)


@dataclass
class Phase:
    """What the phases share: the config (``gpu: auto`` resolved once Ray is up), the trial
    spec from pre-flight (with the tokenized data once the baseline has it), where the files
    go."""

    cfg: SweepConfig
    derived: SweepPlan
    spec: TrialSpec
    loc: Location


class Start:
    """How a sweep starts: what ``run`` and ``resume`` do differently, phase by phase."""

    def location(self, cfg: SweepConfig, derived: SweepPlan) -> Location:
        raise NotImplementedError

    def prepare(self, phase: Phase) -> None:
        """Checks of this start before Ray (pre-flight has passed)."""

    def baseline(self, phase: Phase) -> dict[str, Any]:
        """The base model's metrics; the tokenized data in ``phase.spec``."""
        raise NotImplementedError

    def tuner(self, phase: Phase, baseline: dict[str, Any]):
        """The Tuner whose ``fit`` runs the trials."""
        raise NotImplementedError

    def failed(self) -> None:
        """A phase after ``baseline`` failed: undo what this start changed, where it can."""


def execute(start: Start, cfg: SweepConfig, derived: SweepPlan, *,
            address: str | None) -> int:
    """Run the phases; returns the process exit code.

    Raises:
        UserError: a problem found before the trials (nothing is started then).
    """
    started = time.monotonic()
    require_local_fit(cfg, derived, address)
    spec, fit = preflight_report(cfg, derived)
    for line in fit.table:
        log.info(line)
    for warning in fit.warnings:
        log.warning(f"warning: {warning}")
    from trainables.data import local_rows

    # The workers get the rows, not the paths: a cluster's nodes need not share a disk.
    spec = spec.replace(data_rows=local_rows(spec.data))
    loc = start.location(cfg, derived)
    if cfg.storage.max_gb:
        spec = spec.replace(disk_budget={"path": loc.where,
                                         "max_bytes": int(cfg.storage.max_gb * 1e9)})
    phase = Phase(cfg, derived, spec, loc)
    start.prepare(phase)
    quiet_ray_output()
    started_ray = init_ray(address)
    import ray

    try:
        from .auto_resources import resolve_auto

        phase.cfg = resolve_auto(cfg, derived, spec)
        check_cluster(phase.cfg, loc.storage_path)
        baseline = start.baseline(phase)
        try:
            tuner = start.tuner(phase, baseline)
            return fit_and_finish(phase.cfg, derived, tuner, loc=loc, baseline=baseline,
                                  started=started)
        except BaseException:
            start.failed()
            raise
    finally:
        if started_ray:
            ray.shutdown()


def fit_and_finish(cfg: SweepConfig, derived: SweepPlan, tuner, *, loc: Location,
                   baseline: dict, started: float) -> int:
    """Run the Tuner; then the leaderboard, ``best.json`` and the promotion, or, when the sweep
    was interrupted (Ctrl-C), how to resume it. A cloud sweep dir gets every file the driver
    wrote, whatever happens."""
    from ..callbacks.trial_status import mark_interrupted
    from ..sweepdir.folder import open_sweep

    sweep_dir = loc.sweep_dir
    try:
        try:
            results = tuner.fit()
        finally:
            mark_interrupted(sweep_dir)  # unless Tune saw the experiment to its end
        if (open_sweep(sweep_dir).status() or {}).get("state") == "interrupted":
            log.info("")
            log.info(f"interrupted: finished trials and the checkpoints of unfinished ones are "
                     f"kept in {loc.where}")
            log.info(f"resume it with: qlora-sweep resume {loc.where}")
            return INTERRUPTED_EXIT
        code = finish(cfg, derived, results, sweep_dir=sweep_dir, baseline=baseline)
        from .lost_trials import fail_unfinished_optuna_trials

        fail_unfinished_optuna_trials(sweep_dir)
        if cfg.promote.repo_id and (sweep_dir / BEST).is_file():
            if loc.remote:
                loc.remote.push()  # promote reads the sweep dir from its storage
            _auto_promote(loc.where)
        log.info(f"wall time {time.monotonic() - started:.0f} s (pre-flight, model build if any, "
                 f"baseline and trials)")
        return code
    finally:
        if loc.remote:
            loc.remote.push()


def _auto_promote(where: str) -> None:
    """Promote at the end of ``run``; a failure is reported, and the sweep's exit code stands."""
    from ..promotion.promote import promote

    log.info("")
    log.info("promoting the winner ...")
    try:
        promote(where)
    except UserError as err:
        log.info(err.render())
        log.info(f"the sweep itself is complete; promote again with: qlora-sweep promote {where}")


def finish(cfg: SweepConfig, derived: SweepPlan, results, *, sweep_dir: Path,
           baseline: dict) -> int:
    """Write ``leaderboard.csv`` and ``best.json``, print the table; the exit code."""
    metric, mode = cfg.search.metric, derived.mode
    searched = list(derived.domains)
    rows = trial_rows(results, metric=metric, mode=mode, max_steps=cfg.training.max_steps,
                      searched=searched)
    write_leaderboard(rows, sweep_dir / LEADERBOARD, metric=metric, searched=searched)
    best = best_record(rows, metric=metric, mode=mode, searched=searched, baseline=baseline)
    log.info("")
    share = is_share(metric, cfg.evaluation.scorers)  # an accuracy: "vs base" in points
    log.info(render_table(rows, metric=metric, searched=searched, baseline=baseline, share=share))
    counts = {s: sum(r["status"] == s for r in rows) for s in ("completed", "stopped_early", "errored")}
    log.info(f"{len(rows)} trial{'' if len(rows) == 1 else 's'}: {counts['completed']} "
             f"completed, {counts['stopped_early']} "
             f"stopped early (ASHA), {counts['errored']} errored")
    if cfg.search.budget is not None:
        log.info(f"budget: {_budget_spent(sweep_dir, cfg.search.budget)}")
    if best is None:
        log.info(f"no trial produced a usable {metric}; see the errors above and in {sweep_dir}")
        return RUNTIME_EXIT
    from ..observe import winner
    from ..observe.verdict import judge, render

    usable = usable_rows(rows, metric=metric)
    verdict = judge(winner=best.get("task_metrics") or {}, baseline=baseline,
                    scorers=[s.model_dump() for s in cfg.evaluation.scorers],
                    confusion=best.get("confusion"), items=usable[0].get(ITEMS))
    if verdict is not None:
        best["verdict"] = verdict
    best["winner_rule"] = winner.rule_text(metric, mode)
    best["runner_up"] = winner.runner_up(usable, metric=metric, mode=mode, share=share)
    write_json(sweep_dir / BEST, best)
    log.info(f"best trial {best['trial_id']}: {metric} {best['value']:.4f} at step {best['step']} "
             f"(base model {_number(best['baseline_value'])}, "
             f"{vs_base(best['value'], best['baseline_value'], share=share)})")
    for line in winner.lines(best):
        log.info(line)
    if verdict is not None:
        log.info("")
        log.info("task metrics on the eval prompts (what the models answer):")
        log.info(render(verdict))
    log.info(f"best adapter: {best['checkpoint_path']}")
    return 0 if counts["completed"] else RUNTIME_EXIT


def _number(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _budget_spent(sweep_dir: Path, budget: int) -> str:
    """"spent S of B steps (P %)", from status.json (the count the StatusCallback kept)."""
    from ..config.budget import budget_line
    from ..sweepdir.folder import open_sweep

    recorded = (open_sweep(sweep_dir).status() or {}).get("budget") or {}
    return budget_line(int(recorded.get("spent", 0)), budget)
