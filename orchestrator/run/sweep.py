"""Run a sweep end to end: pre-flight, Ray, baseline, Tuner, leaderboard and ``best.json``."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trainables.storage import is_uri, join

from ..config.schema import SweepConfig
from ..errors import INTERRUPTED_EXIT, RUNTIME_EXIT, UserError
from .cluster import check_placement, check_shared_storage, max_concurrent
from ..sweepdir.remote import Mirror
from ..config.preflight import preflight
from ..sweepdir.results import best_record, render_table, trial_rows, write_json, write_leaderboard

Out = Callable[[str], None]


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


def _runtime_env() -> dict:
    env = {"TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore",
           # How long a reused worker may take to end a stopped trial (it stops at the next
           # training step) before Ray gives up on reusing it and starts a new one.
           "TUNE_FUNCTION_THREAD_TIMEOUT_S": "300"}
    if os.environ.get("QLORA_SWEEP_CACHE"):
        env["QLORA_SWEEP_CACHE"] = os.environ["QLORA_SWEEP_CACHE"]
    return {"env_vars": env}


def quiet_ray_output() -> None:
    """Ray Tune settings of this process (read when the Tuner runs)."""
    # Snapshots after each checkpoint are what keeps a sweep resumable; Ray's warning about
    # their frequency is noise at our checkpoint sizes.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # The Tuner gets its loggers and console table from orchestrator/run/tuner.py: no automatic
    # TensorBoard logger beside ours, and the console table that can name columns.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"


def loopback_only() -> None:
    """Make a local Ray listen on 127.0.0.1 only: its GCS, raylet, workers, driver and agents.

    Ray 2.60 has no bind-address setting: each of its servers binds to loopback when the
    node's IP is 127.0.0.1 and to every interface otherwise, and on Linux it replaces a
    loopback node IP with the machine's address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``
    is 0 (:func:`trainables.compat.ray_private.keep_loopback_node_ip`). Ray's token
    authentication (on by default for a local ``ray.init``) stays on. tests/test_loopback.py
    lists the sweep's listening sockets.
    """
    from trainables.compat.ray_private import keep_loopback_node_ip

    keep_loopback_node_ip()


def init_ray(address: str | None) -> bool:
    """Connect to (or start) Ray; returns whether this call started it."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        host = address.split("://")[-1].rsplit(":", 1)[0]
        if host in ("127.0.0.1", "localhost", "::1", "[::1]"):
            # A cluster bound to loopback (``ray start --node-ip-address 127.0.0.1``): Ray
            # would otherwise swap 127.0.0.1 for this machine's network address, where
            # nothing listens, and wait forever. Only this process's switch: the cluster's
            # own processes were started by `ray start`.
            from trainables.compat.ray_private import keep_loopback_node_ip

            keep_loopback_node_ip()
        ray.init(address=address, runtime_env=_runtime_env(), logging_level=logging.WARNING)
    else:
        # "local": a new Ray on this machine, even when a `ray start` cluster runs here
        # (joining one is --address / RAY_ADDRESS), listening on loopback only.
        loopback_only()
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                 runtime_env=_runtime_env(), logging_level=logging.WARNING)
    return True


def check_cluster(cfg: SweepConfig, storage_path: str, *, out: Out = print) -> None:
    """Trials fit a node (or one the autoscaler can add); storage is shared where it must be.

    Raises:
        UserError: with every problem found.
    """
    from .cluster import autoscaler_node_types, alive_nodes

    nodes, node_types = alive_nodes(), autoscaler_node_types()
    problems, notes = check_placement(cfg, nodes=nodes, node_types=node_types)
    problems += check_shared_storage(cfg, storage_path, nodes=nodes, node_types=node_types)
    if problems:
        raise UserError("the sweep cannot run on this Ray cluster", problems)
    for note in notes:
        out(note)


def _resolved_config(cfg: SweepConfig, settings: dict[str, Any], name: str) -> dict:
    resolved = cfg.model_dump(mode="json")
    resolved["storage"]["name"] = name
    resolved["data"]["train"]["path"] = settings["data"]["train"]["path"]
    if settings["data"]["eval"]:
        resolved["data"]["eval"]["path"] = settings["data"]["eval"]["path"]
    resolved["data"]["format"] = settings["data_format"]
    if settings.get("task_eval"):  # where custom scorers were found, for promote and resume
        resolved["evaluation"]["scorer_path"] = settings["task_eval"]["search_path"]
    return resolved


def run_sweep(cfg: SweepConfig, derived: dict[str, Any], *, address: str | None = None,
              out: Out = print) -> int:
    """Run the sweep and write the sweep dir; returns the process exit code.

    Raises:
        UserError: a pre-flight problem (nothing is started or written then).
    """
    started = time.monotonic()
    settings = preflight(cfg, derived)
    loc = sweep_location(cfg, derived["config_path"])
    sweep_dir = loc.sweep_dir
    if cfg.storage.max_gb:
        settings["disk_budget"] = {"path": loc.where, "max_bytes": int(cfg.storage.max_gb * 1e9)}
    if cfg.promote.repo_id:
        # Hours of training must not end in "no token": check write access first.
        from ..promotion.hub import Hub

        user = Hub(cfg.promote.repo_id).check_write_access()
        out(f"the winner will be promoted to {cfg.promote.repo_id} (as {user}) if it beats the "
            f"adapter there")
    quiet_ray_output()
    started_ray = init_ray(address)
    import ray

    try:
        from .auto_resources import resolve_auto

        saved = cfg  # sweep.yaml keeps "auto": a resume elsewhere estimates again
        cfg = resolve_auto(cfg, derived, settings, out=out)
        check_cluster(cfg, loc.storage_path, out=out)
        from trainables import tiny_llama

        from ..callbacks.tensorboard_log import alpha_hparam, write_baseline_run

        if tiny_llama.is_builtin(cfg.model.name_or_path):
            tiny_llama.resolve(cfg.model.name_or_path, log=out)

        out("evaluating the base model (baseline) and tokenizing the data ...")
        baseline = _baseline(cfg, settings)
        prepared = baseline.pop("prepared_data")
        # The sweep dir appears only once everything that can be checked has passed, so a
        # failed start leaves nothing behind that a later run would trip over.
        sweep_dir.mkdir(parents=True)
        (sweep_dir / "sweep.yaml").write_text(
            yaml.safe_dump(_resolved_config(saved, settings, loc.name), sort_keys=False))
        write_json(sweep_dir / "baseline.json", baseline)
        if shares_data(derived):
            # Tokenized once, in the baseline, for every trial (Ray ships it with the
            # trainable), and kept for a resume: the same rows, not tokenized again.
            from ..sweepdir.tokenized import save

            settings["prepared_data"] = prepared
            save(sweep_dir, prepared)
        write_baseline_run(sweep_dir, baseline=baseline, domains=derived["domains"],
                           metric=cfg.search.metric, max_steps=cfg.training.max_steps,
                           derived=[] if "lora.alpha" in derived["domains"] else [alpha_hparam(
                               derived["domains"], r=cfg.lora.r, alpha=cfg.lora.alpha,
                               alpha_ratio=cfg.lora.alpha_ratio)])
        if loc.remote:
            loc.remote.push()
        out(f"sweep dir: {loc.where}")
        if loc.remote:
            out(f"           (the driver's files are written to {sweep_dir} and uploaded)")
        out(f"watch it:  qlora-sweep tensorboard {loc.where}")
        out(f"           qlora-sweep status {loc.where} --watch")
        judged = baseline.get("task_samples") if cfg.search.metric.startswith("task_") else None
        out(f"baseline {cfg.search.metric}: {baseline[cfg.search.metric]:.4f} "
            f"on {judged or baseline['eval_samples']} eval examples")
        constant = (baseline.get("constant_reference") or {}).get("metrics")
        if constant and cfg.search.metric in constant:
            out(f"constant-answer reference {cfg.search.metric}: "
                f"{constant[cfg.search.metric]:.4f} (every prompt answered "
                f"{next(iter(baseline['constant_reference']['answers'].values()))!r})")

        from .tuner import build_tuner

        concurrency = max_concurrent(cfg)
        tuner = build_tuner(cfg, derived, settings, storage_path=loc.storage_path,
                            name=loc.name, sweep_dir=str(sweep_dir), remote=loc.remote,
                            concurrency=concurrency)
        out(f"starting {cfg.search.num_trials if cfg.search.algorithm != 'grid' else 'grid'} "
            f"trials ({cfg.search.algorithm}, {cfg.scheduler.type}), {concurrency} at a time")
        return fit_and_finish(cfg, derived, tuner, loc=loc, baseline=baseline,
                              started=started, out=out)
    finally:
        if started_ray:
            ray.shutdown()


def fit_and_finish(cfg: SweepConfig, derived: dict[str, Any], tuner, *, loc: Location,
                   baseline: dict, started: float, out: Out) -> int:
    """Run the Tuner; then the leaderboard, ``best.json`` and the promotion, or, when the sweep
    was interrupted (Ctrl-C), how to resume it. A cloud sweep dir gets every file the driver
    wrote, whatever happens."""
    from ..sweepdir.folder import open_sweep
    from ..callbacks.trial_status import mark_interrupted

    sweep_dir = loc.sweep_dir
    try:
        try:
            results = tuner.fit()
        finally:
            mark_interrupted(sweep_dir)  # unless Tune saw the experiment to its end
        if (open_sweep(sweep_dir).status() or {}).get("state") == "interrupted":
            out("")
            out(f"interrupted: finished trials and the checkpoints of unfinished ones are kept "
                f"in {loc.where}")
            out(f"resume it with: qlora-sweep resume {loc.where}")
            return INTERRUPTED_EXIT
        code = finish(cfg, derived, results, sweep_dir=sweep_dir, baseline=baseline, out=out)
        from .lost_trials import fail_unfinished_optuna_trials

        fail_unfinished_optuna_trials(sweep_dir)
        if cfg.promote.repo_id and (sweep_dir / "best.json").is_file():
            if loc.remote:
                loc.remote.push()  # promote reads the sweep dir from its storage
            _auto_promote(loc.where, out)
        out(f"wall time {time.monotonic() - started:.0f} s (pre-flight, model build if any, "
            f"baseline and trials)")
        return code
    finally:
        if loc.remote:
            loc.remote.push()


def _auto_promote(where: str, out: Out) -> None:
    """Promote at the end of ``run``; a failure is reported, and the sweep's exit code stands."""
    from ..promotion.promote import promote

    out("")
    out("promoting the winner ...")
    try:
        promote(where, out=out)
    except UserError as err:
        out(err.render())
        out(f"the sweep itself is complete; promote again with: qlora-sweep promote {where}")


def _baseline(cfg: SweepConfig, settings: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the base model once, on a worker with a trial's resources."""
    from trainables.trial import evaluate_baseline

    baseline = _on_worker(cfg, evaluate_baseline, settings,
                          f"the baseline evaluation of {cfg.model.name_or_path}")
    baseline.update({"model": cfg.model.name_or_path, "metric": cfg.search.metric})
    return baseline


def shares_data(derived: dict[str, Any]) -> bool:
    """Whether the trials share one tokenized copy of the data. A searched seed changes the
    held-out eval split, so then each trial tokenizes its own."""
    return "training.seed" not in derived["domains"]


def tokenize_once(cfg: SweepConfig, derived: dict[str, Any], settings: dict[str, Any],
                  sweep_dir: Path, out: Out, remote=None) -> None:
    """The tokenized data for the trials of a resumed sweep: the run's (``tokenized/``), or,
    when the sweep has none (or it cannot be read), tokenized now on a worker. ``remote``:
    the cloud sweep dir's mirror, ``sweep_dir`` its local copy."""
    if not shares_data(derived):
        return
    prepared = saved_data(sweep_dir, out, remote=remote)
    if prepared is None:
        from trainables.trial import prepare_data

        out("tokenizing the data for the trials ...")
        prepared = _on_worker(cfg, prepare_data, settings, "tokenizing the data")
    settings["prepared_data"] = prepared


def saved_data(sweep_dir: Path, out: Out, *, remote=None) -> dict[str, Any] | None:
    """The run's tokenized data (``tokenized/``); None, with a note when it is damaged."""
    from ..sweepdir.tokenized import FOLDER, Unreadable, load

    if remote is not None:
        remote.pull(under=FOLDER)
    try:
        return load(sweep_dir)
    except Unreadable as err:
        # Nothing is lost: the rows are tokenized again from the data source, as by the run.
        out(f"note: the sweep's tokenized data cannot be read ({err}); tokenizing it again")
        return None


def _on_worker(cfg: SweepConfig, fn, settings: dict[str, Any], doing: str):
    """``fn(settings)`` as a Ray task with a trial's resources (the model loads there)."""
    import ray

    from trainables.data import DataError

    from .cluster import trial_request

    request = trial_request(cfg)
    task = ray.remote(num_cpus=request.pop("CPU"), num_gpus=request.pop("GPU"),
                      memory=request.pop("memory", None), resources=request or None)(fn)
    try:
        return ray.get(task.remote(settings))
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, DataError):
            raise UserError(f"data: {cause}") from None
        lines = [ln for ln in str(cause or err).splitlines() if ln.strip()]
        raise UserError(f"{doing} failed: {lines[-1] if lines else type(err).__name__}",
                        exit_code=RUNTIME_EXIT) from None


def finish(cfg: SweepConfig, derived: dict[str, Any], results, *, sweep_dir: Path,
           baseline: dict, out: Out) -> int:
    """Write ``leaderboard.csv`` and ``best.json``, print the table; the exit code."""
    metric, mode = cfg.search.metric, derived["mode"]
    searched = list(derived["domains"])
    rows = trial_rows(results, metric=metric, mode=mode, max_steps=cfg.training.max_steps,
                      searched=searched)
    write_leaderboard(rows, sweep_dir / "leaderboard.csv", metric=metric, searched=searched)
    best = best_record(rows, metric=metric, mode=mode, searched=searched, baseline=baseline)
    out("")
    out(render_table(rows, metric=metric, searched=searched, baseline=baseline))
    counts = {s: sum(r["status"] == s for r in rows) for s in ("completed", "stopped_early", "errored")}
    out(f"{len(rows)} trials: {counts['completed']} completed, {counts['stopped_early']} stopped "
        f"early by ASHA, {counts['errored']} errored")
    if best is None:
        out(f"no trial produced a usable {metric}; see the errors above and in {sweep_dir}")
        return RUNTIME_EXIT
    from ..observe.verdict import judge, render

    verdict = judge(winner=best.get("task_metrics") or {}, baseline=baseline,
                    scorers=[s.model_dump() for s in cfg.evaluation.scorers])
    if verdict is not None:
        best["verdict"] = verdict
    write_json(sweep_dir / "best.json", best)
    out(f"best trial {best['trial_id']}: {metric} {best['value']:.4f} at step {best['step']} "
        f"(base model {_number(best['baseline_value'])})")
    if verdict is not None:
        out("")
        out("task metrics on the eval prompts (what the models answer):")
        out(render(verdict))
    out(f"best adapter: {best['checkpoint_path']}")
    return 0 if counts["completed"] else RUNTIME_EXIT


def _number(value) -> str:
    return "-" if value is None else f"{value:.4f}"
