"""``qlora-sweep run``: a new sweep (:class:`NewSweep`), through the phases of
:mod:`orchestrator.run.runner`."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from trainables.storage import is_uri, join
from trainables.spec import TrialSpec

from ..config.plan import SweepPlan
from ..config.schema import SweepConfig
from ..errors import UserError
from ..sweepdir.remote import Mirror
from ..sweepdir.results import write_json
from .cluster import max_concurrent
from .ray_session import on_worker
from .runner import Location, Phase, Start, execute
from ..sweepdir.names import BASELINE, SWEEP_YAML

log = logging.getLogger(__name__)


def sweep_location(cfg: SweepConfig, config_path: str) -> Location:
    """Where the sweep's files go; the name defaults to ``<config stem>-<time>``.

    Raises:
        UserError: the sweep dir exists already (or the storage cannot be read).
    """
    name = cfg.storage.name or f"{Path(config_path).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    exists = (f"storage.name = {name!r}: the sweep dir {{}} already exists, and a new sweep "
              f"would mix its results with the old ones. Fix: choose another storage.name, or "
              f"leave it unset for a timestamped one.")
    if is_uri(cfg.storage.path):
        remote = Mirror(join(cfg.storage.path, name))
        if remote.exists():
            raise UserError(exists.format(remote.uri))
        # The mirror of a sweep that never reached the storage is only a cache.
        shutil.rmtree(remote.local, ignore_errors=True)
        return Location(cfg.storage.path, name, remote.local, remote)
    storage = Path(cfg.storage.path).expanduser().resolve()
    sweep_dir = storage / name
    if sweep_dir.exists():
        raise UserError(exists.format(sweep_dir))
    return Location(str(storage), name, sweep_dir)


def _resolved_config(cfg: SweepConfig, spec: TrialSpec, name: str) -> dict:
    resolved = cfg.model_dump(mode="json")
    resolved["storage"]["name"] = name
    resolved["data"]["train"]["path"] = spec.data["train"]["path"]
    if spec.data["eval"]:
        resolved["data"]["eval"]["path"] = spec.data["eval"]["path"]
    resolved["data"]["format"] = spec.data_format
    if spec.task_eval:  # where custom scorers were found, for promote and resume
        resolved["evaluation"]["scorer_path"] = spec.task_eval["search_path"]
    return resolved


class NewSweep(Start):
    """A sweep that starts from nothing: its sweep dir appears once the baseline has passed."""

    def location(self, cfg: SweepConfig, derived: SweepPlan) -> Location:
        return sweep_location(cfg, derived.config_path)

    def prepare(self, phase: Phase) -> None:
        if phase.cfg.promote.repo_id:
            # Hours of training must not end in "no token": check write access first.
            from ..promotion.hub import Hub

            user = Hub(phase.cfg.promote.repo_id).check_write_access()
            log.info(f"the winner will be promoted to {phase.cfg.promote.repo_id} (as {user}) "
                     f"if it beats the adapter there")
        self.saved = phase.cfg  # sweep.yaml keeps "auto": a resume elsewhere estimates again

    def baseline(self, phase: Phase) -> dict[str, Any]:
        from trainables import tiny_llama

        from ..callbacks.tensorboard_log import alpha_hparam, write_baseline_run

        cfg, derived, spec, loc = phase.cfg, phase.derived, phase.spec, phase.loc
        sweep_dir = loc.sweep_dir
        if tiny_llama.is_builtin(cfg.model.name_or_path):
            tiny_llama.resolve(cfg.model.name_or_path)

        log.info("evaluating the base model (baseline) and tokenizing the data ...")
        baseline = _baseline(cfg, spec)
        prepared = baseline.pop("prepared_data")
        # The sweep dir appears only once everything that can be checked has passed, so a
        # failed start leaves nothing behind that a later run would trip over.
        sweep_dir.mkdir(parents=True)
        (sweep_dir / SWEEP_YAML).write_text(
            yaml.safe_dump(_resolved_config(self.saved, spec, loc.name), sort_keys=False))
        write_json(sweep_dir / BASELINE, baseline)
        _record_spec(sweep_dir, spec)
        if shares_data(derived):
            # Tokenized once, in the baseline, for every trial (Ray ships it with the
            # trainable), and kept for a resume: the same rows, not tokenized again.
            from ..sweepdir.tokenized import save

            phase.spec = spec.replace(prepared_data=prepared)
            save(sweep_dir, prepared)
        write_baseline_run(sweep_dir, baseline=baseline, domains=derived.domains,
                           metric=cfg.search.metric, max_steps=cfg.training.max_steps,
                           derived=[] if "lora.alpha" in derived.domains else [alpha_hparam(
                               derived.domains, r=cfg.lora.r, alpha=cfg.lora.alpha,
                               alpha_ratio=cfg.lora.alpha_ratio)])
        if loc.remote:
            loc.remote.push()
        log.info(f"sweep dir: {loc.where}")
        if loc.remote:
            log.info(f"           (the driver's files are written to {sweep_dir} and uploaded)")
        log.info(f"watch it:  qlora-sweep tensorboard {loc.where}")
        log.info(f"           qlora-sweep status {loc.where} --watch")
        judged = baseline.get("task_samples") if cfg.search.metric.startswith("task_") else None
        log.info(f"baseline {cfg.search.metric}: {baseline[cfg.search.metric]:.4f} "
                 f"on {judged or baseline['eval_samples']} eval examples")
        constant = (baseline.get("constant_reference") or {}).get("metrics")
        if constant and cfg.search.metric in constant:
            log.info(f"constant-answer reference {cfg.search.metric}: "
                     f"{constant[cfg.search.metric]:.4f} (every prompt answered "
                     f"{next(iter(baseline['constant_reference']['answers'].values()))!r})")
        return baseline

    def tuner(self, phase: Phase, baseline: dict[str, Any]):
        from .tuner import build_tuner

        cfg, loc = phase.cfg, phase.loc
        concurrency = max_concurrent(cfg)
        tuner = build_tuner(cfg, phase.derived, phase.spec, storage_path=loc.storage_path,
                            name=loc.name, sweep_dir=str(loc.sweep_dir), remote=loc.remote,
                            concurrency=concurrency)
        n = cfg.search.num_trials
        planned = "grid trials" if cfg.search.algorithm == "grid" else (
            "1 trial" if n == 1 else f"{n} trials")
        log.info(f"starting {planned} ({cfg.search.algorithm}, {cfg.scheduler.type}), "
                 f"{concurrency} at a time")
        return tuner


def run_sweep(cfg: SweepConfig, derived: SweepPlan, *,
              address: str | None = None) -> int:
    """Run a new sweep and write its sweep dir; returns the process exit code.

    Raises:
        UserError: a pre-flight problem (nothing is started or written then).
    """
    return execute(NewSweep(), cfg, derived, address=address)


def _baseline(cfg: SweepConfig, spec: TrialSpec) -> dict[str, Any]:
    """Evaluate the base model once, on a worker with a trial's resources."""
    from trainables.entry import evaluate_baseline

    baseline = on_worker(cfg, evaluate_baseline, spec,
                          f"the baseline evaluation of {cfg.model.name_or_path}")
    baseline.update({"model": cfg.model.name_or_path, "metric": cfg.search.metric})
    return baseline


def _record_spec(sweep_dir: Path, spec: TrialSpec) -> None:
    """``spec.json``: the spec, with each local data file's identity (name, hash, rows) as the
    trials read it, so ``promote`` needs neither the data paths nor pre-flight again."""
    from ..promotion.provenance import data_identity
    from ..sweepdir import spec_file

    data = dict(spec.data)
    for split in ("train", "eval"):
        if data.get(split) and data[split].get("local", True):
            data[split] = {**data[split], "identity": data_identity(data[split])}
    spec_file.save(sweep_dir, spec.replace(data=data))


def shares_data(derived: SweepPlan) -> bool:
    """Whether the trials share one tokenized copy of the data. A searched seed changes the
    held-out eval split, so then each trial tokenizes its own."""
    return "training.seed" not in derived.domains
