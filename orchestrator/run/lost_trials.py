"""Trials a killed driver started after Ray's last experiment snapshot.

Ray Tune records the experiment (``experiment_state-*.json``) at most every ~10 s. A trial
created after the last record, when the driver is killed, is unknown to the restored Tuner:
``resume`` starts that configuration again as a new trial (from step 0), and the lost one must
not be left looking alive. Its row in ``status.json`` is marked ``lost``, and once the resumed
sweep has ended, the Optuna trial it was asked as (still RUNNING, never to be told) is
marked FAIL, so the study holds only trials that ended. Its folder stays on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..sweepdir.results import write_json
from ..sweepdir.names import JOURNAL, STATUS

LOST_NOTE = ("lost: the driver was killed before Ray recorded this trial; resume started its "
             "configuration again as a new trial")


def recorded_trials(sweep_dir: Path) -> set[str] | None:
    """The trial ids of Ray's newest experiment record (None when there is none)."""
    states = sorted(sweep_dir.glob("experiment_state-*.json"))
    if not states:
        return None
    data = json.loads(states[-1].read_text())
    return {json.loads(trial_json)["trial_id"] for trial_json, _ in data["trial_data"]}


def mark_lost(sweep_dir: Path) -> list[str]:
    """Mark the trials of ``status.json`` that Ray did not record as ``lost``; their ids."""
    path = sweep_dir / STATUS
    known = recorded_trials(sweep_dir)
    if known is None or not path.is_file():
        return []
    status = json.loads(path.read_text())
    lost = [t for t in status["trials"] if t["trial_id"] not in known and t["status"] != "lost"]
    for trial in lost:
        trial.update(status="lost", error=LOST_NOTE)
    if lost:
        write_json(path, status)
    return [t["trial_id"] for t in lost]


def fail_unfinished_optuna_trials(sweep_dir: Path) -> int:
    """After a sweep has ended: Optuna trials still RUNNING were asked for trials Ray lost;
    mark them FAIL. Returns how many."""
    journal = sweep_dir / JOURNAL
    if not journal.is_file():
        return 0
    import optuna

    from .extend import study_names
    from .tuner import optuna_storage

    storage = optuna_storage(str(sweep_dir))
    failed = 0
    for name in study_names(sweep_dir):
        study = optuna.load_study(study_name=name, storage=storage)
        study_id = storage.get_study_id_from_name(name)
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_system_attr(trial_id, "qlora_sweep", LOST_NOTE)
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            failed += 1
    return failed
