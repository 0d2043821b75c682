"""``qlora-sweep status``: read from the sweep dir by other processes, while the shared smoke
sweep runs in the background and after it ends."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil

from .conftest import SMOKE_LR, cli


def test_status_while_the_sweep_runs_shows_running_trials(smoke_sweep):
    running = smoke_sweep.running
    assert running, "status never saw a running trial while the sweep ran"
    assert running["state"] == "running"
    assert running["metric"] == "eval_loss" and running["mode"] == "min"
    assert running["planned_trials"] == 5
    live = [t for t in running["trials"] if t["status"] == "running"]
    assert live and any(t["steps_run"] > 0 for t in live)
    assert running["baseline"] is not None
    assert running["driver"]["heartbeat_every_s"] > 0 and running["driver_gone"] is None


def test_status_watch_refreshes_until_the_sweep_ends(smoke_sweep):
    log = smoke_sweep.watch_log
    assert smoke_sweep.watch_code == 0, log[-3000:]
    assert "running" in log  # it saw the sweep running ...
    last = log.rstrip().split("sweep smoke: ")[-1]
    assert last.startswith("finished")  # ... and stopped once it had ended
    assert "best so far: trial" in last and "base model" in last


def test_status_table_after_the_sweep(smoke_sweep):
    proc = cli("status", str(smoke_sweep.path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("sweep smoke: finished")
    # Short names of the searched settings, each trial's status with its rung or error line.
    header = next(line for line in out.splitlines() if line.startswith("#"))
    assert header.split()[:5] == ["#", "trial", "status", "lr", "targets"]
    assert re.search(r"stopped early at step (10|20)\b", out)  # ASHA's rungs: 10 and 20 steps
    assert re.search(r"errored( \(\d restarts?\))?: ", out) and "diverged" in out
    assert "q_proj+v_proj" in out and "attention" in out
    assert "base model  baseline" in out
    best = json.loads((smoke_sweep.path / "best.json").read_text())
    assert f"best so far: trial {best['trial_id']}, eval_loss {best['value']:.4f}" in out


def _strict(text: str):
    """json.loads that fails on NaN/Infinity, as strict readers (JavaScript, jq) do."""
    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_status_json_and_csv_for_scripts(smoke_sweep):
    data = _strict(cli("status", str(smoke_sweep.path), "--format", "json").stdout)
    for name in ("baseline.json", "best.json", "status.json"):  # a diverged trial is in there
        _strict((smoke_sweep.path / name).read_text())
    assert data["state"] == "finished"
    assert sum(data["counts"].values()) == len(data["trials"]) == 5
    best = json.loads((smoke_sweep.path / "best.json").read_text())
    assert data["best"]["trial_id"] == best["trial_id"]
    assert data["best"]["value"] == best["value"]
    assert data["best"]["baseline"] == best["baseline_value"]
    errored = [t for t in data["trials"] if t["status"] == "errored"]
    assert [t["training.learning_rate"] for t in errored] == [SMOKE_LR["nan"]]
    assert "diverged" in errored[0]["error"] and "\n" not in errored[0]["error"]
    stopped = [t for t in data["trials"] if t["status"] == "stopped_early"]
    assert stopped and all(t["rung"] == t["steps_run"] in (10, 20) for t in stopped)

    proc = cli("status", str(smoke_sweep.path), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 5
    assert list(rows[0])[:4] == ["trial_id", "status", "training.learning_rate",
                                 "lora.target_modules"]
    assert {r["trial_id"] for r in rows} == {t["trial_id"] for t in data["trials"]}


def test_status_bad_input(smoke_sweep, tmp_path):
    missing = cli("status", str(tmp_path / "nope"))
    not_a_sweep = cli("status", str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(smoke_sweep.path / "sweep.yaml", empty / "sweep.yaml")
    no_results = cli("status", str(empty))
    for proc, words in ((missing, "does not exist"), (not_a_sweep, "not a sweep dir"),
                        (no_results, "no trial has started yet")):
        assert proc.returncode != 0
        assert words in proc.stderr and "Fix:" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.count("\n") == 1
