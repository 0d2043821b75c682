"""Record the demo task's learning curves into a table for benchmarks/search_replay.py.

    python benchmarks/record_curves.py [--configs 150] [--repeats 20] [--work DIR]
                                       [--out benchmarks/tables/demo_curves.csv]

Two real ``qlora-sweep run`` sweeps of the demo task (examples/demo_cpu.yaml: builtin:tiny-llama
in NF4, the pricing data, 240 steps, an evaluation with the price scorer every 20 steps), local
Ray, 2 trials at a time, no early stopping (every trial to max_steps):

1. ``--configs`` configurations drawn at random (seed 0) from a space wider than the demo's
   (``SPACE``: learning rates from 3e-5, which barely moves, to 3e-2, which diverges), trained
   with ``training.seed`` 0;
2. the first ``--repeats`` of them again with ``training.seed`` 1 and 2, so the noise of one
   training run is measured.

Both sweeps are then written as one table (benchmarks/curve_table.py describes the format).
A run cut short goes on where it stopped (``qlora-sweep resume``) when rerun with the same
``--work``. Cost on 2 cores: see docs/benchmarks.md ("The learning-curve table").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import curve_table  # noqa: E402
from benchmarks.report import ROOT  # noqa: E402

# Wider than search_spaces/cpu-demo.yaml on every axis; the demo's space lies inside it.
SPACE = {
    "lora.r": {"choice": [4, 8, 16, 32]},
    "lora.alpha_ratio": {"choice": [0.5, 1.0, 2.0, 4.0]},
    "lora.dropout": {"choice": [0.0, 0.05, 0.1]},
    "lora.target_modules": {"choice": ["attention", "mlp", "all-linear"]},
    "training.learning_rate": {"loguniform": [3.0e-5, 3.0e-2]},
}


def demo_config(root: Path, name: str) -> dict:
    cfg = yaml.safe_load((ROOT / "examples" / "demo_cpu.yaml").read_text())
    for split in ("train", "eval"):
        cfg["data"][split] = str(ROOT / "examples" / cfg["data"][split])
    cfg["search_space"] = dict(SPACE)
    cfg["search"] = {"algorithm": "random", "metric": "task_price_mae", "seed": 0}
    cfg["scheduler"] = {"type": "none"}
    cfg["storage"] = {"path": str(root), "name": name, "keep_checkpoints": 1}
    cfg["training"]["seed"] = 0
    return cfg


def run(cfg: dict, root: Path, name: str) -> Path:
    sweep = root / name
    done = root / f"{name}.done"
    if done.is_file():
        return sweep
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    command = ["resume", str(sweep)] if (sweep / "sweep.yaml").is_file() else ["run", str(path)]
    print(f"{name}: qlora-sweep {command[0]} (log {root / name}.log)", flush=True)
    with open(root / f"{name}.log", "a") as log:
        code = subprocess.call([sys.executable, "-m", "orchestrator", *command], cwd=ROOT,
                               stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"{name}: qlora-sweep {command[0]} exited {code}; see {root / name}.log")
    done.write_text("done\n")
    return sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path("/tmp/record-curves"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/tables/demo_curves.csv")
    parser.add_argument("--record", action="store_true",
                        help="write what the table holds and cost into docs/benchmarks.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()

    first = demo_config(args.work, "configs")
    first["search"]["num_trials"] = args.configs
    sweeps = [run(first, args.work, "configs")]

    if args.repeats:
        table = curve_table.from_sweep(sweeps[0])
        chosen = sorted(table.runs, key=lambda r: r.config)[:args.repeats]
        again = demo_config(args.work, "repeats")
        again["search_space"]["training.seed"] = {"choice": [1, 2]}
        points = [{**run_.settings, "training.seed": seed} for seed in (1, 2) for run_ in chosen]
        again["search"].update(num_trials=len(points), initial_points=points)
        sweeps.append(run(again, args.work, "repeats"))

    table = curve_table.from_sweeps(sweeps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.write(args.out)
    n = len(table.configs())
    cost = {s.name: sweep_seconds(s) for s in sweeps}
    summary = {"table": str(args.out), "configurations": n, "runs": len(table.runs),
               "rows": sum(len(r.steps) for r in table.runs), "sweep_seconds": cost,
               "wall_s": round(time.perf_counter() - began)}
    print(json.dumps(summary), flush=True)
    if args.record:
        record_table(table, summary, args)


def sweep_seconds(sweep: Path) -> float:
    """From the first trial's first report to the last report of any trial (Ray's timestamps
    less each trial's own running time at its first report)."""
    import csv

    starts, ends = [], []
    for path in sweep.glob("trial_*/progress.csv"):
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("timestamp")]
        if rows:
            starts.append(int(rows[0]["timestamp"]) - float(rows[0]["time_total_s"]))
            ends.append(int(rows[-1]["timestamp"]))
    return round(max(ends) - min(starts)) if starts else 0.0


def record_table(table, summary: dict, args) -> None:
    import statistics

    from benchmarks.report import record

    repeated = [runs for runs in table.configs().values() if len(runs) > 1]
    metric = "task_price_mae"
    spread = []
    for runs in repeated:
        bests = [min(v for v in r.metrics[metric] if v == v) for r in runs]
        spread.append(statistics.pstdev(bests) / statistics.mean(bests))
    minutes = sum(summary["sweep_seconds"].values()) / 60
    size = args.out.stat().st_size / 1024
    body = (f"`{args.out.relative_to(ROOT)}`: {summary['configurations']} configurations of "
            f"the demo task, {summary['runs']} training runs ({len(repeated)} configurations "
            f"repeated with training seeds 1 and 2), {summary['rows']} rows (one per run and "
            f"evaluation), {size:.0f} KiB. Settings drawn at random from "
            f"`benchmarks/record_curves.py`'s SPACE: "
            + ", ".join(f"{k} {v}" for k, v in SPACE.items()) +
            f". Every run to 240 steps, an evaluation (loss and the price scorer) every 20."
            f"\n\nCost: {minutes:.0f} minutes of two real sweeps, 2 trials at a time "
            f"(`python benchmarks/record_curves.py --configs {args.configs} --repeats "
            f"{args.repeats} --record`). Noise of one run: over the repeated configurations, "
            f"the spread of a configuration's best {metric} across its 3 seeds is "
            f"{statistics.median(spread) * 100:.1f} % of its mean (median; "
            f"{min(spread) * 100:.1f}-{max(spread) * 100:.1f} %).")
    record("The learning-curve table of the demo task", body)


if __name__ == "__main__":
    main()
