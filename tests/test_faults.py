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

from .conftest import cli, read_status, start_cli, stop, write_config


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
            status = read_status(sweep)
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

    trials = {t["config"]["training.learning_rate"]: t for t in read_status(sweep)["trials"]}
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
