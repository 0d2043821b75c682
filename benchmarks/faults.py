"""Faults injected into a real sweep, and what each recovery cost in training steps.

    python benchmarks/faults.py [--trials 3] [--seed 0]

A sweep of ``--trials`` trials (the tiny model, one at a time, 60 steps, an evaluation and a
checkpoint every 10) runs through ``qlora-sweep run``. While it runs, this script:

- kills each trial's worker process once (SIGKILL, by the pid in ``status.json``) at a random
  moment between two evaluations;
- for the second trial, first cuts short its newest checkpoint (as a disk fault would), so the
  restart must fall back to the one before;
- kills the driver (SIGKILL) once, during the last trial, and finishes the sweep with
  ``qlora-sweep resume``.

Steps lost by a recovery = the step the trial was at when killed - the step it went on from.
The first comes from the kill time and the trial's own pace (steps per second between its last
two evaluations, evaluation included, so it errs low by under a step); the second from
``progress.csv``, where the restarted attempt's rows carry a new pid.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import ROOT, record, table  # noqa: E402

MAX_STEPS, EVAL_STEPS = 60, 10


def _status(sweep: Path) -> dict | None:
    try:
        return json.loads((sweep / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _start(*args: str, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="qlora-sweep-faults-"))
    lrs = [round(3e-3 - 5e-4 * i, 6) for i in range(args.trials)]
    config = work / "sweep.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"name_or_path": "builtin:tiny-llama"},
        "data": {"train": str(ROOT / "examples/data/pricing_train.jsonl"),
                 "eval": str(ROOT / "examples/data/pricing_eval.jsonl"),
                 "max_length": 64, "max_eval_samples": 40},
        "training": {"max_steps": MAX_STEPS, "eval_steps": EVAL_STEPS, "logging_steps": 5},
        "search_space": {"training.learning_rate": {"choice": lrs}},
        "search": {"algorithm": "optuna", "num_trials": args.trials, "max_concurrent": 1,
                   "seed": args.seed,
                   "initial_points": [{"training.learning_rate": lr} for lr in lrs]},
        "scheduler": {"type": "none"},
        "storage": {"path": str(work / "sweeps"), "name": "faults", "keep_checkpoints": 2},
        "failure": {"max_retries": 2},
    }, sort_keys=False))
    sweep = work / "sweeps" / "faults"
    log = open(work / "driver.log", "w")
    driver = _start("run", str(config), log=log)
    faults: list[dict] = []  # one per injected fault
    seen: dict[str, list[tuple[int, float]]] = {}  # trial -> [(reported step, seen at)]
    plan: dict[str, float] = {}  # trial -> when to kill it
    order: list[str] = []
    try:
        while True:
            if driver.poll() is not None:
                if driver.returncode == 0:
                    break
                if not any(f["kind"] == "driver" for f in faults):
                    raise SystemExit(f"the sweep failed; see {work / 'driver.log'}")
                driver = _start("resume", str(sweep), log=log)  # after the driver kill
                continue
            status = _status(sweep) or {"trials": []}
            now = time.time()
            for t in status["trials"]:
                tid = t["trial_id"]
                if t["status"] != "running" or not t.get("pid"):
                    continue
                if tid not in order:
                    order.append(tid)
                steps = seen.setdefault(tid, [])
                if t["steps_run"] and (not steps or steps[-1][0] != t["steps_run"]):
                    steps.append((t["steps_run"], now))
                done = {f["trial_id"] for f in faults}
                # Kill once two evaluations give the pace, before the last one.
                if (tid not in done and tid not in plan and len(steps) >= 2
                        and steps[-1][0] <= MAX_STEPS - 2 * EVAL_STEPS):
                    pace = (steps[-1][1] - steps[-2][1]) / (steps[-1][0] - steps[-2][0])
                    plan[tid] = now + rng.uniform(0.1, 0.9) * pace * EVAL_STEPS
                if tid in plan and now >= plan[tid] and tid not in done:
                    step, at = steps[-1]
                    pace = (steps[-1][1] - steps[-2][1]) / (steps[-1][0] - steps[-2][0])
                    corrupt = len(order) == 2
                    kind = "worker"
                    if corrupt:
                        newest = max((sweep / f"trial_{tid}").glob("checkpoint_*"))
                        data = (newest / "adapter_model.safetensors").read_bytes()
                        (newest / "adapter_model.safetensors").write_bytes(data[:-64])
                        kind = "worker + newest checkpoint cut short"
                    driver_kill = len(order) == args.trials and args.trials >= 3
                    if driver_kill:
                        driver.kill()
                        driver.wait()
                        kind = "driver (then resume)"
                    else:
                        os.kill(t["pid"], signal.SIGKILL)
                    killed_at = time.time()
                    faults.append({"kind": "driver" if driver_kill else kind, "label": kind,
                                   "trial_id": tid, "pid": t["pid"],
                                   "live_step": step + (killed_at - at) / pace})
            time.sleep(0.05)
    finally:
        _stop(driver)
        log.close()

    rows, lost, recovered = [], [], 0
    final = {t["trial_id"]: t for t in _status(sweep)["trials"]}
    for f in faults:
        with open(sweep / f"trial_{f['trial_id']}" / "progress.csv", newline="") as fh:
            history = [(int(r["step"]), int(r["pid"])) for r in csv.DictReader(fh)]
        killed_rows = [i for i, (_, pid) in enumerate(history) if pid == f["pid"]]
        after = history[killed_rows[-1] + 1] if killed_rows and killed_rows[-1] + 1 < len(
            history) else None
        resumed_from = after[0] - EVAL_STEPS if after else None
        ok = final[f["trial_id"]]["status"] == "completed" and after is not None
        recovered += ok
        steps_lost = f["live_step"] - resumed_from if resumed_from is not None else None
        if steps_lost is not None:
            lost.append(steps_lost)
        rows.append([f["label"], f["trial_id"], f"{f['live_step']:.1f}",
                     resumed_from if resumed_from is not None else "-",
                     f"{steps_lost:.1f}" if steps_lost is not None else "-",
                     "yes" if ok else "NO"])
    body = table(["fault", "trial", "killed at step (est.)", "went on from step",
                  "steps lost", "trial completed"], rows)
    body += (f"\n\n{len(faults)} faults injected, {recovered} recovered; steps lost per "
             f"recovery: at most {max(lost):.1f} (eval interval: {EVAL_STEPS} steps; the fall-"
             f"back from a damaged checkpoint costs up to one more interval). Every trial "
             f"completed {MAX_STEPS} steps: "
             f"{all(t['steps_run'] == MAX_STEPS for t in final.values())}.")
    record("Faults injected and recovered", body)


if __name__ == "__main__":
    main()
