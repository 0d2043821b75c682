"""Search efficiency at a fixed budget of training steps: TPE + ASHA vs random search vs defaults.

    python benchmarks/search_efficiency.py [--budget 1920] [--seeds 3] [--max-steps 160] [--keep DIR]
                                           [--metric eval_loss|task_price_mae]
                                           [--arms tpe,random,defaults] [--eval-steps N]

The demo task (examples/demo_cpu.yaml: builtin:tiny-llama in NF4, the pricing data, batch 8,
max_length 64, cosine, warmup 0.05, max_grad_norm 1.0, an evaluation every max_steps / 8 steps),
three arms, each a real ``qlora-sweep run`` (local Ray, 2 trials at a time), for seed k in
0..n-1 with ``search.seed = training.seed = k``:

* TPE + ASHA: Optuna TPE on the cpu-demo search space, ASHA (grace = one eval interval,
  reduction factor 2), ``num_trials`` 4 x budget / max_steps. The sweep is stopped (SIGINT,
  as a Ctrl-C) once its trials' reported steps reach the budget: reports after that are not
  counted anyway, so this only saves wall time, and 4x (not 3x) makes sure it gets there.
* random, no early stopping: Ray's seeded random sampling of the same space, every trial to
  max_steps, ``num_trials`` = budget / max_steps.
* QLoRA paper defaults: one run of r 64, alpha 16, dropout 0.1, lr 2e-4, all linear layers
  (an empty search space, random, 1 trial); it spends max_steps steps, not the budget.

* ``demo`` (``--arms demo,random``): the demo's search as a user gets it, examples/demo_cpu.yaml
  as shipped (its search space, search settings, scheduler and initial points; the project's
  default search recipe), with only the seeds, the budget's stop and the evaluation cadence set
  as for the other arms.

``--arms`` picks the arms (default: tpe, random, defaults); ``--eval-steps`` the evaluation
cadence of every arm (default: max_steps / 8; ASHA's grace is one evaluation interval, except
in the demo arm, which keeps its own). Neither search arm gets ``search.initial_points`` (the demo's known-good point is prior
knowledge). The budget is applied offline, the same way to every arm: every report of every
trial (``trial_*/progress.csv``) is put in time order; "steps spent" at a report is the sum
over trials of the latest step each had reported by then (steps trained after a trial's last
report, e.g. before ASHA's stop reached it, are not counted). Figures, median (min-max) over
the seeds:

* best eval loss: the lowest eval_loss reported with steps spent <= budget;
* steps to within 2 %: target = 1.02 x the best eval loss any arm reached within budget in any
  seed; the steps spent at an arm's first report (within budget) at or below it, over the seeds
  that reached it ("reached k/n");
* steps spent in all, trials run: what the sweep did before it ended or was stopped;
* ratios: per seed, then median (min-max) over seeds.

With ``--metric task_price_mae`` every arm's trials also generate answers to the eval prompts
(the demo's price scorer), the sweeps rank by the price MAE, and "best" is the lowest MAE; the
section then also gives the rank correlation, over every trial of every arm, of each trial's
best eval loss and best price MAE, and how often (per seed and arm) the lowest-loss trial is not
the lowest-MAE one.

Each sweep's output goes to ``<dir>/arm<i>-seed<k>.log`` (i: 0, 1, 2 as above); with ``--keep DIR`` the sweep dirs stay
and a rerun of the same command reuses the sweeps that finished (a run cut short goes on).
Ray's ``timestamp`` is whole seconds; a report's time is refined to ``t0 + time_total_s`` (t0:
the trial's start, from all its reports), kept within its whole second.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import ROOT, record, spread, table  # noqa: E402

ARMS = ["TPE + ASHA", "random, no early stopping", "QLoRA paper defaults",
        "the demo as shipped"]
ARM_KEYS = dict(zip(["tpe", "random", "defaults", "demo"], ARMS))
TPE, RANDOM, DEFAULTS, DEMO = ARMS
# The demo's price scorer (examples/demo_cpu.yaml's evaluation section).
PRICE = {"type": "number", "name": "price", "pattern": r"\$\s*([0-9][0-9,]*\.?[0-9]*)"}


def count(values: list[int]) -> str:
    """``spread`` for step and trial counts, written out in full (1940, not 1.94e+03)."""
    return f"{statistics.median(values):g} ({min(values)}-{max(values)})"


def config(arm: str, seed: int, *, budget: int, max_steps: int, root: Path, name: str,
           metric: str = "eval_loss", every: int | None = None) -> dict:
    every = every or max(1, max_steps // 8)
    if arm == DEMO:
        return demo_config(seed, max_steps=max_steps, every=every, root=root, name=name,
                           budget=budget)
    cfg = {
        "model": {"name_or_path": "builtin:tiny-llama",
                  "quantization": {"mode": "4bit", "quant_type": "nf4", "double_quant": True}},
        "data": {"train": str(ROOT / "examples/data/pricing_train.jsonl"),
                 "eval": str(ROOT / "examples/data/pricing_eval.jsonl"), "max_length": 64},
        "lora": {"r": 8, "dropout": 0.05, "target_modules": "all-linear"},
        "training": {"max_steps": max_steps, "per_device_train_batch_size": 8,
                     "eval_steps": every, "logging_steps": max(1, every // 2),
                     "learning_rate": 1e-3, "warmup_ratio": 0.05, "lr_scheduler_type": "cosine",
                     "max_grad_norm": 1.0, "seed": seed},
        "search_space": {"preset": "cpu-demo"},
        "search": {"algorithm": "random", "num_trials": -(-budget // max_steps), "seed": seed},
        "scheduler": {"type": "none"},
        "resources": {"cpu": 1, "gpu": 0},
        "storage": {"path": str(root), "name": name},
    }
    if metric != "eval_loss":
        cfg["evaluation"] = {"scorers": [PRICE], "max_new_tokens": 12}
        cfg["search"]["metric"] = metric
    if arm == TPE:
        cfg["search"].update(algorithm="optuna", num_trials=4 * -(-budget // max_steps))
        cfg["scheduler"] = {"type": "asha", "grace_period": every, "reduction_factor": 2}
    elif arm == DEFAULTS:
        cfg["lora"] = {"r": 64, "alpha": 16, "dropout": 0.1, "target_modules": "all-linear"}
        cfg["training"]["learning_rate"] = 2e-4
        cfg["search_space"], cfg["search"]["num_trials"] = {}, 1
    return cfg


def demo_config(seed: int, *, max_steps: int, every: int, root: Path, name: str,
                budget: int) -> dict:
    """examples/demo_cpu.yaml as shipped, with the seeds, max_steps, the evaluation cadence,
    the storage and ``search.budget`` (the benchmark's) set; the demo sizes its trials to it."""
    cfg = yaml.safe_load((ROOT / "examples" / "demo_cpu.yaml").read_text())
    for split in ("train", "eval"):
        cfg["data"][split] = str(ROOT / "examples" / cfg["data"][split])
    cfg["training"].update(max_steps=max_steps, eval_steps=every, seed=seed)
    cfg["search"].update(seed=seed, budget=budget)
    cfg["storage"] = {"path": str(root), "name": name}
    return cfg


def reports(sweep: Path, metric: str = "eval_loss") -> tuple[list[tuple[float, str, int, float]], int]:
    """Every eval report ``(time, trial, step, metric)`` in time order, and the trial count."""
    out, trials = [], 0
    for path in sorted(sweep.glob("trial_*/progress.csv")):
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get(metric) and r.get("time_total_s")
                    and r[metric] != "nan"]
        trials += 1
        if not rows:
            continue
        t0 = statistics.median(int(r["timestamp"]) - float(r["time_total_s"]) for r in rows) + 0.5
        for r in rows:
            ts = int(r["timestamp"])
            t = min(max(t0 + float(r["time_total_s"]), ts), ts + 0.999)
            out.append((t, path.parent.name, int(r["step"]), float(r[metric])))
    return sorted(out), trials


def trial_bests(sweep: Path, metric: str) -> list[tuple[float, float]]:
    """Per trial with both: ``(best eval loss, best metric)`` over its reports."""
    out = []
    for path in sorted(sweep.glob("trial_*/progress.csv")):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        losses = [float(r["eval_loss"]) for r in rows if r.get("eval_loss") not in (None, "", "nan")]
        values = [float(r[metric]) for r in rows if r.get(metric) not in (None, "", "nan")]
        if losses and values:
            out.append((min(losses), min(values)))
    return out


def spent_curve(events) -> list[tuple[int, float]]:
    """``(steps spent, eval_loss)`` at each report, in time order."""
    latest, curve = {}, []
    for _, trial, step, loss in events:
        latest[trial] = max(step, latest.get(trial, 0))
        curve.append((sum(latest.values()), loss))
    return curve


def run_sweep(cfg: dict, root: Path, name: str, *, stop_at: int | None, timeout: float) -> Path:
    path, log = root / f"{name}.yaml", root / f"{name}.log"
    path.write_text(yaml.safe_dump(cfg))
    sweep, stopped = root / name, False
    shutil.rmtree(sweep, ignore_errors=True)  # a sweep cut short by an earlier run
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(path)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None:
                time.sleep(5)
                if stop_at and not stopped and max([s for s, _ in spent_curve(
                        reports(sweep)[0])] or [0]) >= stop_at:
                    proc.send_signal(signal.SIGINT)  # as a Ctrl-C: Tune stops, the driver exits
                    stopped, deadline = True, min(deadline, time.monotonic() + 300)
                if time.monotonic() > deadline:
                    break
        finally:  # past the deadline, or this script stopped: the sweep must not outlive it
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    if proc.returncode != 0 and not stopped:
        tail = "".join(log.read_text().splitlines(keepends=True)[-40:])
        raise SystemExit(f"{name}: qlora-sweep run exited {proc.returncode} (log {log}):\n{tail}")
    return sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=1920, help="training steps per arm")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=160, help="steps per trial")
    parser.add_argument("--keep", type=Path, help="keep the sweep dirs here (a rerun with the "
                        "same --keep reuses the sweeps that finished)")
    parser.add_argument("--sweep-timeout", type=float, default=5400, help="seconds per sweep")
    parser.add_argument("--metric", default="eval_loss", choices=["eval_loss", "task_price_mae"],
                        help="what the sweeps rank by and the figures compare")
    parser.add_argument("--arms", default="tpe,random,defaults",
                        help="comma-separated, of: " + ", ".join(ARM_KEYS))
    parser.add_argument("--eval-steps", type=int, help="evaluation cadence of every arm "
                        "(default: max_steps / 8)")
    args = parser.parse_args()
    unknown = [a for a in args.arms.split(",") if a not in ARM_KEYS]
    if unknown:
        parser.error(f"--arms: unknown {unknown}; known: {', '.join(ARM_KEYS)}")
    arms = [ARM_KEYS[a] for a in args.arms.split(",")]
    every = args.eval_steps or max(1, args.max_steps // 8)
    metric = args.metric
    label = "eval loss" if metric == "eval_loss" else "price MAE"
    began = time.perf_counter()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`: stop the sweep too
    if args.budget < args.max_steps:
        parser.error("--budget must be at least --max-steps (one full trial)")
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-search-"))
    root.mkdir(parents=True, exist_ok=True)
    curves = {arm: [] for arm in arms}  # per seed: [(spent, value)], steps in all, trials
    pairs = {arm: [] for arm in arms}  # per seed: [(best eval loss, best metric)] per trial
    for seed in range(args.seeds):
        for arm in arms:
            i = ARMS.index(arm)
            name = f"arm{i}-seed{seed}"
            cfg = config(arm, seed, budget=args.budget, max_steps=args.max_steps, root=root,
                         name=name, metric=metric, every=every)
            done = root / f"{name}.done"  # with --keep, a rerun reuses the sweeps it finished
            if done.is_file() and yaml.safe_load(done.read_text()) == cfg:
                print(f"seed {seed}, {arm}: reusing {root / name}", flush=True)
                start, sweep = time.perf_counter(), root / name
            else:
                print(f"seed {seed}, {arm}: running ({name})", flush=True)
                start = time.perf_counter()
                sweep = run_sweep(cfg, root, name, stop_at=args.budget if arm in (TPE, DEMO) else None,
                                  timeout=args.sweep_timeout)
                done.write_text(yaml.safe_dump(cfg))
            events, trials = reports(sweep, metric)
            curve = spent_curve(events)
            curves[arm].append((curve, curve[-1][0], trials))
            pairs[arm].append(trial_bests(sweep, metric) if metric != "eval_loss" else [])
            best = min(loss for s, loss in curve if s <= args.budget)
            print(f"  {time.perf_counter() - start:.0f} s: {trials} trials, {curve[-1][0]} steps,"
                  f" best {label} within budget {best:.4f}", flush=True)
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)

    best = {arm: [min(l for s, l in c if s <= args.budget) for c, _, _ in curves[arm]]
            for arm in arms}
    target = 1.02 * min(min(v) for v in best.values())
    to_target = {arm: [next((s for s, l in c if s <= args.budget and l <= target), None)
                       for c, _, _ in curves[arm]] for arm in arms}
    n = args.seeds

    def reached(values):
        hit = [v for v in values if v is not None]
        return f"{count(hit) if hit else 'not reached'} (reached {len(hit)}/{n})"

    def ratio(a, b):
        pairs = [x / y for x, y in zip(a, b) if x is not None and y is not None]
        return (f"**{spread(pairs)}** ({len(pairs)}/{n} seeds)" if pairs
                else f"n/a (both reached it in 0/{n} seeds)")

    rows = [[arm, count([t for _, _, t in curves[arm]]), count([s for _, s, _ in curves[arm]]),
             f"{statistics.median(best[arm]):.4f} ({min(best[arm]):.4f}-{max(best[arm]):.4f})",
             reached(to_target[arm])] for arm in arms]
    if DEFAULTS in arms:
        rows[arms.index(DEFAULTS)][2] += " (one run: max_steps, not the budget)"
    body = table(["arm", "trials run", "steps spent in all", f"best {label} within budget",
                  "steps to within 2 % of the best"], rows)
    ratios = []
    for arm in (a for a in (TPE, DEMO) if a in arms):
        for other in (o for o in (RANDOM, DEFAULTS) if o in arms):
            ratios.append([f"best {label}, {arm} / {other}", ratio(best[arm], best[other])])
        if RANDOM in arms:
            ratios.append([f"steps to within 2 %, random / {arm}",
                           ratio(to_target[RANDOM], to_target[arm])])
    body += "\n\n" + table(["ratio, per seed", "median (min-max)"], ratios)
    if metric != "eval_loss":
        from orchestrator.observe.plots import rank_correlation

        every_trial = [p for arm in arms for seed_pairs in pairs[arm] for p in seed_pairs]
        rho = rank_correlation([a for a, _ in every_trial], [b for _, b in every_trial])
        sweeps = [seed_pairs for arm in arms if arm != DEFAULTS
                  for seed_pairs in pairs[arm] if seed_pairs]
        differ = sum(min(sp)[1] != min(sp, key=lambda p: p[1])[1] for sp in sweeps)
        body += (f"\n\nLoss against task: over the {len(every_trial)} trials of every arm and "
                 f"seed, the rank correlation of each trial's best eval loss and best price MAE "
                 f"is **{'n/a' if rho is None else f'{rho:+.2f}'}**; in {differ} of the "
                 f"{len(sweeps)} searched sweeps the trial with the lowest eval loss is not the "
                 f"one with the lowest price MAE.")
    described = {
        TPE: f"TPE + ASHA (cpu-demo space, grace {every}, reduction factor 2, no initial points) "
             f"is stopped once its reported steps reach the budget",
        RANDOM: "random samples the cpu-demo space with every trial run to the end, no initial "
                "points",
        DEFAULTS: "QLoRA defaults: r 64, alpha 16, dropout 0.1, lr 2e-4, all linear layers, one "
                  "run",
        DEMO: "the demo as shipped: examples/demo_cpu.yaml (its search space, algorithm, "
              "ASHA and initial points as they are; search.budget set to the budget, which "
              "sizes its trials), also stopped once its reported steps reach the budget",
    }
    body += (f"\n\nRanked by {metric}. Budget {args.budget} training steps per arm, counted "
             f"offline from every trial's reports in time order; {args.max_steps} steps per "
             f"trial, an evaluation every {every}; {n} seeds (search.seed = training.seed); the "
             f"demo task (tiny Llama in NF4, pricing data), 2 trials at a time. Target for "
             f"\"within 2 %\": 1.02 x {target / 1.02:.4f} = {target:.4f}, the best {label} any "
             f"arm reached within budget. " + "; ".join(described[a] for a in arms) + ".")
    print(f"wall time {time.perf_counter() - began:.0f} s", flush=True)
    title = "Search efficiency at a fixed step budget" + (
        "" if metric == "eval_loss" else ", ranked by the price MAE")
    if DEMO in arms:
        title = "Real sweeps: the demo's search as shipped against random search"
    record(title, body)


if __name__ == "__main__":
    main()
