"""The driver is interrupted and killed mid-sweep; ``resume`` loses nothing.

Ctrl-C, then SIGKILL, then ``resume``: every trial is counted once, the finished trial is left
as it was, each Optuna trial is told once and ASHA's rungs equal the history. Then the sweep is
extended, and extended again with a wider search space.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import time

from orchestrator.cli import main

from .conftest import cli, read_status, start_cli, stop, write_config


def _wait_for(sweep, condition, proc, what: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"exited before {what}: " + proc.stdout.read()[-4000:]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        status = read_status(sweep)
        if status and condition(status):
            return status
        time.sleep(0.2)


def _recorded_status(sweep, trial_id: str) -> str | None:
    """The trial's status in Ray's newest experiment snapshot."""
    for path in sorted(sweep.glob("experiment_state-*.json"), reverse=True)[:1]:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):  # being replaced
            return None
        for trial_json, _ in data["trial_data"]:
            trial = json.loads(trial_json)
            if trial["trial_id"] == trial_id:
                return trial["status"]
    return None


def test_interrupt_and_kill_the_driver_then_resume_loses_nothing(tiny_model_dir, tmp_path, capsys):
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
    assert read_status(sweep)["state"] == "interrupted"
    assert not (sweep / "best.json").exists()  # no winner is named for half a sweep

    # 2. Resume (the first trial goes on from its checkpoint), then SIGKILL that driver while
    #    the second trial runs.
    resumed = start_cli("resume", str(sweep))
    try:
        status = _wait_for(sweep, running_with(1), resumed, "the second trial")
        first = next(t for t in status["trials"] if t["ended_at"])
        time.sleep(1)
        # Whether Ray's own record of the experiment has the first trial's end yet (it is
        # only ever updated towards it): if not, the restored Tuner trains its last interval
        # again (docs/guides/faults-and-resume.md). Ray copies the trial's progress.csv to the sweep
        # dir with that record, so it is read after.
        recorded_end = _recorded_status(sweep, first["trial_id"]) == "TERMINATED"
        time.sleep(1)
        first_rows = (sweep / f"trial_{first['trial_id']}" / "progress.csv").read_text()
        resumed.kill()
        resumed.communicate(timeout=120)
    finally:
        stop(resumed)
    # 3. Resume again: the sweep ends.
    final = cli("resume", str(sweep), timeout=600)
    assert final.returncode == 0, (final.stdout + final.stderr)[-4000:]

    status = read_status(sweep)
    assert status["state"] == "finished"
    # A trial the killed driver started after Ray's last snapshot is marked lost, not left
    # "running"; its configuration ran again as a new trial.
    lost = [t for t in status["trials"] if t["status"] == "lost"]
    assert all(t["status"] in ("completed", "stopped_early", "lost") for t in status["trials"])
    assert len(status["trials"]) == 2 + len(lost)
    rows = list(csv.DictReader(open(sweep / "leaderboard.csv")))
    assert sorted(float(r["training.learning_rate"]) for r in rows) == sorted(lrs)
    assert len({r["trial_id"] for r in rows}) == 2  # every trial exactly once
    assert all(r["status"] in ("completed", "stopped_early") for r in rows), rows
    # The trial finished before the driver was killed was not run again; unless it ended
    # after Ray's last snapshot: then it trained again from that snapshot's checkpoint
    # (docs/guides/faults-and-resume.md). The rows read above are the sweep dir's copy, which Ray
    # updates with its snapshots: the rows trained again either repeat their tail, or follow
    # it where the killed driver's last rows never reached the sweep dir.
    after = (sweep / f"trial_{first['trial_id']}" / "progress.csv").read_text()
    if recorded_end:
        assert after == first_rows
    else:
        assert after.startswith(first_rows)
        again = [int(r["step"]) for r in csv.DictReader(io.StringIO(after))]
        done = [int(r["step"]) for r in csv.DictReader(io.StringIO(first_rows))]
        extra = again[len(done):]  # the steps after the snapshot's checkpoint
        assert again[:len(done)] == done, (done, again)
        assert (extra == done[len(done) - len(extra):]
                or extra and extra[0] > done[-1] and again[-1] == 30), (done, again)
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
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2 and sorted(t.params["training.learning_rate"] for t in done) == lrs
    # The lost trial's Optuna trial is closed as FAIL, never left RUNNING.
    assert len(study.trials) == 2 + len(lost)
    assert all(t.state == optuna.trial.TrialState.FAIL for t in study.trials if t not in done)

    # ASHA's rungs, which Ray does not save, come back from the trials' results.
    from orchestrator.config.loading import load_config
    from orchestrator.run.resume import _histories
    from orchestrator.sweepdir.folder import open_sweep
    from orchestrator.run.tuner import replay_asha, scheduler

    cfg, derived = load_config(str(sweep / "sweep.yaml"), [])
    asha = scheduler(cfg, derived)
    replay_asha(asha, _histories(open_sweep(sweep), derived.rank_key), mode="min")
    rung20 = dict(asha._brackets[0]._rungs)[20]
    for row in rows:
        first_at_20 = next(float(r["eval_loss"]) for r in csv.DictReader(
            open(sweep / f"trial_{row['trial_id']}" / "progress.csv")) if r["step"] == "20")
        assert rung20[row["trial_id"]] == -first_at_20

    # A finished sweep: resume refuses, says how to add trials; the space may not change.
    # (In this process: refusing starts nothing, and the interpreter is not what is tested.)
    for args, words in (([], "to add trials: qlora-sweep resume"),
                        (["search.num_trials=2"], "the sweep already has 2 trials planned"),
                        (["search_space.training.learning_rate="
                          "{choice: [0.002, 0.003, 0.01]}"],
                         "search_space: changed on resume"),
                        (["search.num_trials=3", "training.max_steps=50"],
                         "only search.num_trials may change")):
        code = main(["resume", str(sweep), *args])
        out, err = capsys.readouterr()
        assert code == 2, out + err
        assert words in err and "Fix:" in err and "Traceback" not in err

    # Extend it: one more trial, proposed by the same study, the first two untouched.
    before = {r["trial_id"]: (sweep / f"trial_{r['trial_id']}" / "progress.csv").read_text()
              for r in rows}
    more = cli("resume", str(sweep), "search.num_trials=3", timeout=600)
    assert more.returncode == 0, (more.stdout + more.stderr)[-4000:]
    rows = list(csv.DictReader(open(sweep / "leaderboard.csv")))
    assert len(rows) == 3 and set(before) < {r["trial_id"] for r in rows}
    for trial_id, text in before.items():
        assert (sweep / f"trial_{trial_id}" / "progress.csv").read_text() == text
    # The resumed sweep's trials trained on the run's tokenized data (tokenized/), not
    # tokenized again.
    assert (sweep / "tokenized" / "train.parquet").is_file()
    assert "tokenizing the data" not in more.stdout
    (added,) = {r["trial_id"] for r in rows} - set(before)
    reports = list(csv.DictReader(open(sweep / f"trial_{added}" / "progress.csv")))
    assert reports and {r["data_tokenized"] for r in reports} == {"0"}
    study = optuna.load_study(study_name="resumed", storage=optuna.storages.JournalStorage(
        JournalFileBackend(str(sweep / "optuna.journal"))))
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3
    assert states.count(optuna.trial.TrialState.FAIL) == len(lost)
    assert read_status(sweep)["planned_trials"] == 3 and read_status(sweep)["state"] == "finished"

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
