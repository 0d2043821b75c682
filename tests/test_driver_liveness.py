"""A driver that died on another host (a head node that crashed, a new KubeRay head pod) is
seen as gone from its heartbeat in ``status.json``: ``status`` says so and ``resume`` goes on;
one whose heartbeat is fresh is refused unless ``--force``.

The sweep dirs are written here as a driver on another host left them; the commands run
in-process (refusing starts nothing; an accepted resume stops at its next check, pre-flight of
data that is no longer there, before Ray starts).
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.config.loading import load_config

from .conftest import write_config

pytestmark = pytest.mark.fast


def _stamp(seconds_ago: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds_ago))


def _sweep_left_running(tmp_path, *, heartbeat_age_s: float):
    """A sweep dir whose status says running, written by a driver on another host whose last
    heartbeat is ``heartbeat_age_s`` old; its data file is gone (so a resume that gets past the
    liveness check stops at pre-flight, before Ray)."""
    sweep = tmp_path / "sweeps" / "elsewhere"
    sweep.mkdir(parents=True)
    train = tmp_path / "train.jsonl"  # never written: the data lived on the dead head node
    config = write_config(tmp_path / "config.yaml",
                          storage={"path": str(tmp_path / "sweeps"), "name": "elsewhere"})
    resolved = load_config(str(config), [])[0].model_dump(mode="json")
    resolved["data"]["train"]["path"] = resolved["data"]["eval"]["path"] = str(train)
    (sweep / "sweep.yaml").write_text(yaml.safe_dump(resolved))
    (sweep / "tuner.pkl").write_bytes(b"")  # what Tuner.can_restore looks for
    trial = {"trial_id": "a1", "status": "running", "config": {"lora.r": 4}, "steps_run": 10,
             "best_value": 2.5, "best_step": 10, "last_value": 2.5, "rung": None, "error": ""}
    (sweep / "status.json").write_text(json.dumps({
        "sweep": "elsewhere", "state": "running", "started_at": _stamp(3600),
        "updated_at": _stamp(heartbeat_age_s),
        "driver": {"host": "head-pod-that-was-replaced", "pid": 4242,
                   "heartbeat_at": _stamp(heartbeat_age_s), "heartbeat_every_s": 30.0},
        "metric": "eval_loss", "mode": "min", "max_steps": 20, "searched": ["lora.r"],
        "planned_trials": 2, "asha_rungs": [], "trials": [trial]}))
    return sweep


def test_a_driver_on_another_host_with_a_stale_heartbeat_is_gone(tmp_path, capsys):
    sweep = _sweep_left_running(tmp_path, heartbeat_age_s=600)

    assert main(["status", str(sweep)]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("sweep elsewhere: interrupted (the driver is gone: driver pid 4242 "
                            "on head-pod-that-was-replaced wrote no heartbeat for 10 min")
    assert f"qlora-sweep resume {sweep}" in first
    assert main(["status", str(sweep), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["state"] == "interrupted" and "no heartbeat" in data["driver_gone"]

    # resume goes past the liveness check (to pre-flight, which finds the data gone).
    code = main(["resume", str(sweep)])
    out, err = capsys.readouterr()
    assert "wrote no heartbeat for 10 min" in out and "resuming it" in out
    assert "still running" not in err
    assert code == 2 and "train.jsonl" in err and "Traceback" not in err


def test_a_fresh_heartbeat_is_refused_unless_forced(tmp_path, capsys):
    sweep = _sweep_left_running(tmp_path, heartbeat_age_s=20)

    assert main(["status", str(sweep)]) == 0
    assert capsys.readouterr().out.startswith("sweep elsewhere: running")

    assert main(["resume", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert "the sweep is still running (driver pid 4242 on head-pod-that-was-replaced, last " \
           "heartbeat 2" in err
    assert "counts as gone after 150 s" in err and "add --force" in err

    code = main(["resume", str(sweep), "--force"])
    out, err = capsys.readouterr()
    assert "resume --force: the sweep looked still running" in out
    assert code == 2 and "train.jsonl" in err and "still running" not in err


def test_the_driver_beats_while_no_trial_reports(tmp_path, monkeypatch):
    """The status callback refreshes the heartbeat from Tune's loop even when nothing else
    changes, and leaves ``updated_at`` (the last trial event) alone."""
    from orchestrator.callbacks import trial_status

    callback = trial_status.StatusCallback(tmp_path, metric="eval_loss", mode="min",
                                           searched=[], max_steps=20, planned=1, rungs=[])
    callback.setup()
    first = json.loads((tmp_path / "status.json").read_text())
    callback.on_step_end(1, [])  # within the period: nothing written
    assert json.loads((tmp_path / "status.json").read_text()) == first
    monkeypatch.setattr(trial_status, "HEARTBEAT_EVERY_S", 0.0)
    time.sleep(1.05)  # the stamps have whole seconds
    callback.on_step_end(2, [])
    beat = json.loads((tmp_path / "status.json").read_text())
    assert beat["driver"]["heartbeat_at"] > first["driver"]["heartbeat_at"]
    assert beat["updated_at"] == first["updated_at"] and beat["state"] == "running"


def test_a_live_driver_on_this_host_is_not_gone_however_late_its_heartbeat():
    """A driver whose loop stalled (or that was suspended) is alive: replacing it would put two
    drivers on one sweep dir. Its process decides on its own host."""
    import os
    import socket

    from orchestrator.observe.status import driver_gone

    status = {"state": "running", "driver": {"host": socket.gethostname(), "pid": os.getpid(),
                                             "heartbeat_at": _stamp(3600),
                                             "heartbeat_every_s": 30.0}}
    assert driver_gone(status) is None
    status["driver"]["host"] = "another-host"
    assert "wrote no heartbeat for" in driver_gone(status)
