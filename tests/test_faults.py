"""Fault injection and disk limits on real sweeps: nothing a user made is lost.

A trial's worker process is killed by its pid mid-training; the trial must restart from its
newest checkpoint and finish with a history that has no gap and no repeated step; killed again
with its newest checkpoint cut short, it goes on from the one before, with a warning. A trial that
ASHA stops keeps only its best checkpoint; ``storage.max_gb`` stops new checkpoints.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import time

from .conftest import cli, start_cli, stop, write_config


def _status(sweep) -> dict | None:
    try:
        return json.loads((sweep / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def test_a_killed_trial_worker_restarts_and_asha_stopped_trials_keep_their_best(
        tiny_model_dir, tmp_path):
    good, bad = 3e-3, 1e-6
    config = write_config(
        tmp_path / "sweep.yaml",
        data={"max_eval_samples": 40},
        training={"max_steps": 40, "eval_steps": 10, "logging_steps": 5},
        search_space={"training.learning_rate": {"choice": [good, bad]}},
        # One at a time: the good trial (killed twice) sets the rungs, the bad one is stopped.
        search={"algorithm": "optuna", "num_trials": 2, "max_concurrent": 1, "seed": 0,
                "initial_points": [{"training.learning_rate": good},
                                   {"training.learning_rate": bad}]},
        scheduler={"type": "asha", "grace_period": 20, "reduction_factor": 2},
        storage={"path": str(tmp_path / "sweeps"), "name": "faults", "keep_checkpoints": 2},
        failure={"max_retries": 2},
    )
    sweep = tmp_path / "sweeps" / "faults"
    run = start_cli("run", str(config))
    kills = []  # (pid, steps_run) of each kill
    try:
        deadline = time.monotonic() + 600
        while len(kills) < 2:
            assert run.poll() is None, run.stdout.read()[-4000:]
            assert time.monotonic() < deadline, f"the trial never got there: {kills}"
            status = _status(sweep)
            trial = status and status["trials"] and status["trials"][0]
            if not (trial and trial["pid"]) or kills and trial["pid"] == kills[-1][0]:
                time.sleep(0.1)
                continue
            trial_dir = sweep / f"trial_{trial['trial_id']}"
            # Killed once Ray has recorded the checkpoint at that step (what a restart uses).
            if not kills and (trial["checkpoint_step"] or 0) >= 20:
                os.kill(trial["pid"], signal.SIGKILL)  # the trial's worker, started by this run
                kills.append((trial["pid"], trial["checkpoint_step"]))
            elif kills and (trial["checkpoint_step"] or 0) >= 30:
                # Again, its newest checkpoint first cut short as by a disk fault.
                newest = max(trial_dir.glob("checkpoint_*"))
                weights = newest / "adapter_model.safetensors"
                weights.write_bytes(weights.read_bytes()[:-64])
                os.kill(trial["pid"], signal.SIGKILL)
                kills.append((trial["pid"], trial["checkpoint_step"]))
            time.sleep(0.1)
        log, _ = run.communicate(timeout=600)
    finally:
        stop(run)
    assert run.returncode == 0, log[-4000:]

    trials = {t["config"]["training.learning_rate"]: t for t in _status(sweep)["trials"]}
    restarted, stopped = trials[good], trials[bad]
    assert restarted["status"] == "completed" and restarted["retries"] == 2
    assert restarted["steps_run"] == 40
    trial_dir = sweep / f"trial_{restarted['trial_id']}"
    steps = [int(r["step"]) for r in csv.DictReader(open(trial_dir / "progress.csv"))]
    # The first restart went on from the newest checkpoint: no step again, none missing. The
    # second found the newest unreadable and went on from the one before: one interval again.
    assert [k[1] for k in kills] == [20, 30] and steps == [10, 20, 30, 30, 40], (steps, kills)
    assert f"warning: checkpoint {newest.name} cannot be read (adapter_model" in log
    assert "going on from checkpoint_" in log
    assert (trial_dir / "corrupt_checkpoints.txt").read_text().startswith(newest.name + ": ")
    best = json.loads((sweep / "best.json").read_text())
    assert best["trial_id"] == restarted["trial_id"]
    assert not best["checkpoint_path"].endswith(newest.name)

    # ASHA stopped the bad trial at rung 20 after two checkpoints; only its best is left.
    assert stopped["status"] == "stopped_early" and stopped["rung"] == 20
    rows = list(csv.DictReader(open(sweep / f"trial_{stopped['trial_id']}" / "progress.csv")))
    assert len(rows) == 2
    best_row = min(rows, key=lambda r: float(r["eval_loss"]))
    kept = [p.name for p in (sweep / f"trial_{stopped['trial_id']}").glob("checkpoint_*")]
    assert kept == [best_row["checkpoint_dir_name"]]


def test_max_gb_stops_new_checkpoints_and_the_trial_goes_on(tiny_model_dir, tmp_path):
    config = write_config(
        tmp_path / "sweep.yaml",
        data={"max_eval_samples": 40},
        training={"max_steps": 20, "eval_steps": 10},
        search_space={"training.learning_rate": {"choice": [3e-3]}},
        search={"algorithm": "random", "num_trials": 1},
        scheduler={"type": "none"},
        # Room for the first checkpoint (about 1.5 MB with the optimizer state), not more.
        storage={"path": str(tmp_path / "sweeps"), "name": "disk", "max_gb": 0.0015},
    )
    proc = cli("run", str(config), timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    sweep = tmp_path / "sweeps" / "disk"
    assert "warning: storage.max_gb: the sweep dir uses" in log
    assert "Fix: raise storage.max_gb" in log
    trial_dir = next(sweep.glob("trial_*"))
    steps = [int(r["step"]) for r in csv.DictReader(open(trial_dir / "progress.csv"))]
    assert steps == [10, 20]  # the trial went on and reported every evaluation
    checkpoints = sorted(p.name for p in trial_dir.glob("checkpoint_*"))
    assert checkpoints == ["checkpoint_000000"]
    # Every checkpoint that exists is whole.
    assert (trial_dir / checkpoints[0] / "adapter_model.safetensors").is_file()
    best = json.loads((sweep / "best.json").read_text())
    assert best["checkpoint_path"].endswith("checkpoint_000000") and best["step"] == 10


def _wait_for(sweep, condition, proc, what: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"exited before {what}: " + proc.stdout.read()[-4000:]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        status = _status(sweep)
        if status and condition(status):
            return status
        time.sleep(0.2)


def test_interrupt_and_kill_the_driver_then_resume_loses_nothing(tiny_model_dir, tmp_path):
    lrs = [2e-3, 3e-3]  # the second better than the first: ASHA lets both run
    config = write_config(
        tmp_path / "sweep.yaml",
        data={"max_eval_samples": 40},
        training={"max_steps": 30, "eval_steps": 10, "logging_steps": 5},
        search_space={"training.learning_rate": {"choice": lrs}},
        search={"algorithm": "optuna", "num_trials": 2, "max_concurrent": 1, "seed": 0,
                "initial_points": [{"training.learning_rate": lr} for lr in lrs]},
        scheduler={"type": "asha", "grace_period": 20, "reduction_factor": 2},
        storage={"path": str(tmp_path / "sweeps"), "name": "resumed"},
    )
    sweep = tmp_path / "sweeps" / "resumed"

    def running_with(n_done: int):
        def check(status):
            ended = [t for t in status["trials"] if t["ended_at"]]
            live = [t for t in status["trials"]
                    if t["status"] == "running" and t["steps_run"] >= 10]
            return len(ended) == n_done and live
        return check

    # 1. Ctrl-C while the first trial runs: a graceful stop that says how to resume.
    run = start_cli("run", str(config))
    try:
        _wait_for(sweep, running_with(0), run, "the first trial")
        time.sleep(1)  # Tune snapshots the experiment just after the checkpoint
        run.send_signal(signal.SIGINT)
        log, _ = run.communicate(timeout=300)
    finally:
        stop(run)
    assert run.returncode == 130, log[-4000:]
    assert f"resume it with: qlora-sweep resume {sweep}" in log
    assert _status(sweep)["state"] == "interrupted"
    assert not (sweep / "best.json").exists()  # no winner is named for half a sweep

    # 2. Resume (the first trial goes on from its checkpoint), then SIGKILL that driver while
    #    the second trial runs.
    resumed = start_cli("resume", str(sweep))
    try:
        status = _wait_for(sweep, running_with(1), resumed, "the second trial")
        first = next(t for t in status["trials"] if t["ended_at"])
        first_rows = (sweep / f"trial_{first['trial_id']}" / "progress.csv").read_text()
        time.sleep(1)
        resumed.kill()
        resumed.communicate(timeout=120)
    finally:
        stop(resumed)
    # 3. Resume again: the sweep ends.
    final = cli("resume", str(sweep), timeout=600)
    assert final.returncode == 0, (final.stdout + final.stderr)[-4000:]

    status = _status(sweep)
    assert status["state"] == "finished"
    rows = list(csv.DictReader(open(sweep / "leaderboard.csv")))
    assert sorted(float(r["training.learning_rate"]) for r in rows) == sorted(lrs)
    assert len({r["trial_id"] for r in rows}) == 2  # every trial exactly once
    assert all(r["status"] in ("completed", "stopped_early") for r in rows), rows
    # The trial finished before the driver was killed was not run again.
    assert (sweep / f"trial_{first['trial_id']}" / "progress.csv").read_text() == first_rows
    # The interrupted trials went on from their checkpoints, not from step 0.
    for row in rows:
        steps = [int(r["step"]) for r in
                 csv.DictReader(open(sweep / f"trial_{row['trial_id']}" / "progress.csv"))]
        assert steps.count(10) == 1 and steps == sorted(steps), (row["trial_id"], steps)
    assert (sweep / "best.json").is_file()

    # The Optuna study continued: two trials, each told its result once.
    import optuna
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="resumed", storage=optuna.storages.JournalStorage(
        JournalFileBackend(str(sweep / "optuna.journal"))))
    assert len(study.trials) == 2
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)

    # ASHA's rungs, which Ray does not save, come back from the trials' results.
    from orchestrator.loading import load_config
    from orchestrator.resume import _histories
    from orchestrator.sweep_dir import open_sweep
    from orchestrator.tuner import replay_asha, scheduler

    cfg, derived = load_config(str(sweep / "sweep.yaml"), [])
    asha = scheduler(cfg, derived)
    replay_asha(asha, _histories(open_sweep(sweep)), mode="min")
    rung20 = dict(asha._brackets[0]._rungs)[20]
    for row in rows:
        first_at_20 = next(float(r["eval_loss"]) for r in csv.DictReader(
            open(sweep / f"trial_{row['trial_id']}" / "progress.csv")) if r["step"] == "20")
        assert rung20[row["trial_id"]] == -first_at_20

    # A finished sweep: resume refuses, says how to add trials; the space may not change.
    for args, words in (([], "to add trials: qlora-sweep resume"),
                        (["search.num_trials=2"], "the sweep already has 2 trials planned"),
                        (["search_space.training.learning_rate="
                          "{choice: [0.002, 0.003, 0.01]}"],
                         "search_space: changed on resume"),
                        (["search.num_trials=3", "training.max_steps=50"],
                         "only search.num_trials may change")):
        proc = cli("resume", str(sweep), *args, timeout=120)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert words in proc.stderr and "Fix:" in proc.stderr and "Traceback" not in proc.stderr

    # Extend it: one more trial, proposed by the same study, the first two untouched.
    before = {r["trial_id"]: (sweep / f"trial_{r['trial_id']}" / "progress.csv").read_text()
              for r in rows}
    more = cli("resume", str(sweep), "search.num_trials=3", timeout=600)
    assert more.returncode == 0, (more.stdout + more.stderr)[-4000:]
    rows = list(csv.DictReader(open(sweep / "leaderboard.csv")))
    assert len(rows) == 3 and set(before) < {r["trial_id"] for r in rows}
    for trial_id, text in before.items():
        assert (sweep / f"trial_{trial_id}" / "progress.csv").read_text() == text
    study = optuna.load_study(study_name="resumed", storage=optuna.storages.JournalStorage(
        JournalFileBackend(str(sweep / "optuna.journal"))))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert _status(sweep)["planned_trials"] == 3 and _status(sweep)["state"] == "finished"

    # --allow-space-change: a wider space, a new study seeded with the trials inside it.
    wider = "search_space.training.learning_rate={choice: [0.002, 0.003, 0.004]}"
    changed = cli("resume", str(sweep), "search.num_trials=4", wider, "--allow-space-change",
                  timeout=600)
    assert changed.returncode == 0, (changed.stdout + changed.stderr)[-4000:]
    assert "starts from the 3 of 3 finished trials" in changed.stdout
    rows = list(csv.DictReader(open(sweep / "leaderboard.csv")))
    assert len(rows) == 4 and len({r["trial_id"] for r in rows}) == 4
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(sweep / "optuna.journal")))
    assert optuna.get_all_study_names(storage) == ["resumed", "resumed-space2"]
    new_study = optuna.load_study(study_name="resumed-space2", storage=storage)
    assert len(new_study.trials) == 4  # 3 carried over + 1 proposed in the new space
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in new_study.trials)
    cfg, _ = load_config(str(sweep / "sweep.yaml"), [])
    assert cfg.search.num_trials == 4
    assert cfg.search_space["training.learning_rate"] == {"choice": [0.002, 0.003, 0.004]}
