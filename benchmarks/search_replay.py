"""How much compute each search setting needs, replayed on recorded learning curves.

    python benchmarks/search_replay.py [--table benchmarks/tables/demo_curves.csv | SWEEP_DIR]
        [--config examples/demo_cpu.yaml] [--replays 50] [--arms a,b,...] [--budget 2880]
        [--concurrency 2] [--json] [--record]

Each arm is the demo config (``--config``) with a few settings changed, searched by the
project's own search stack (benchmarks/replay_engine.py: the searcher, ASHA and space that
``qlora-sweep run`` builds) on the table's recorded curves (benchmarks/curve_table.py; a
finished sweep dir works as a table too). Replay k of every arm uses ``search.seed = k`` and
draws recorded seeds with seed k; each runs until its steps spent reach 4 x ``--budget``
(default: the config's ``search.budget``, else its ``num_trials x max_steps``). No arm gets the config's
``search.initial_points`` (prior knowledge); the arms that do not name a space search
``--space`` (default: the config's own space; the demo's is the ``cpu-demo`` preset), and the
``auto`` arms ``search_space: auto``, whose initial points come from the model's prior.

Per arm, over the replays (the value is the config's ``search.metric``; lower or higher is
better by its mode):

* steps to the top 5 %: the steps spent when the arm first reports a value as good as the
  table's top 5 % of configurations (ranked by each configuration's best value with seed 0);
  median (IQR), and how many replays got there within 4 x budget;
* steps to within 2 % of the table's single best value (one noisy run: reported, not the aim);
* best value reached within 1x, 2x and 4x the budget (median);
* paired with random search (every trial to max_steps), replay by replay: the share of
  replays whose best within the budget is at least as good as random's, and the one-sided
  Wilcoxon signed-rank p-value that the arm's best is better.

``--json`` prints one summary line; ``--record`` writes the table into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import warnings
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import curve_table  # noqa: E402
from benchmarks.replay_engine import Lookup, replay  # noqa: E402
from benchmarks.report import ROOT, record, table  # noqa: E402

RANDOM = "random"
# name -> (what it is, config overrides, search recipe name or None)
ARMS = {
    RANDOM: ("random search, every trial to max_steps",
             ["search.algorithm=random", "scheduler.type=none"], None),
    "random-asha": ("random search + ASHA", ["search.algorithm=random"], None),
    "tpe-ray": ("TPE + ASHA as Ray's OptunaSearch tells it (before)", [], "tpe-ray"),
    "tpe-fidelity": ("TPE + ASHA, told pruned/best", [], "tpe-fidelity"),
    "tpe-mv": ("multivariate TPE + constant liar + ASHA, told pruned/best", [],
               "tpe-multivariate"),
    "tpe-mv-s8": ("the same, 8 start-up trials", [], "tpe-multivariate-startup8"),
    "tpe-mv-g20": ("the same, ASHA grace 20", ["scheduler.grace_period=20"],
                   "tpe-multivariate"),
    "tpe-mv-rf3": ("the same, ASHA reduction factor 3", ["scheduler.reduction_factor=3"],
                   "tpe-multivariate"),
    "tpe-mv-g120": ("the same, ASHA grace 120 (one rung)", ["scheduler.grace_period=120"],
                    "tpe-multivariate"),
    "tpe-mv-full": ("multivariate TPE + constant liar, every trial to max_steps",
                    ["scheduler.type=none"], "tpe-multivariate"),
    # search_space: auto (the model's prior: LR range and initial points) in place of the
    # config's space; no search.initial_points of the config's, so auto's come from the prior
    "auto": ("search_space: auto + multivariate TPE + ASHA (its 3 initial points from the prior)",
             ["search_space=auto"], "tpe-multivariate"),
    "auto-random-asha": ("search_space: auto + random search + ASHA (the same initial points)",
                         ["search_space=auto", "search.algorithm=random"], None),
    "auto-full": ("search_space: auto + multivariate TPE, every trial to max_steps",
                  ["search_space=auto", "scheduler.type=none"], "tpe-multivariate"),
    "auto-random": ("search_space: auto + random search, every trial to max_steps",
                    ["search_space=auto", "search.algorithm=random", "scheduler.type=none"],
                    None),
}
DEFAULT_ARM = "random-asha"  # what examples/demo_cpu.yaml searches with


def load(config: Path, overrides: list[str]):
    from orchestrator.config.loading import load_config

    # a finished sweep's sweep.yaml is read with the rules of a sweep that ran
    return load_config(config, overrides, existing=Path(config).name == "sweep.yaml")


def reach(curve, target: float, sign: float) -> float:
    """Steps spent at the first report at least as good as ``target`` (inf: never)."""
    return next((s for s, v in curve if not math.isnan(v) and sign * v <= sign * target), math.inf)


def best_within(curve, limit: int, sign: float) -> float:
    values = [sign * v for s, v in curve if s <= limit and not math.isnan(v)]
    return sign * min(values) if values else math.inf * sign


def signed_rank_p(diffs: list[float]) -> float:
    """One-sided Wilcoxon signed-rank p-value that the differences are > 0 (normal
    approximation with the tie correction; zero differences dropped, as Wilcoxon's rule)."""
    d = [x for x in diffs if x != 0]
    n = len(d)
    if n == 0:
        return 1.0
    order = sorted(range(n), key=lambda i: abs(d[i]))
    ranks = [0.0] * n
    i, ties = 0, 0.0
    while i < n:
        j = i
        while j + 1 < n and abs(d[order[j + 1]]) == abs(d[order[i]]):
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t ** 3 - t
        i = j + 1
    w = sum(r for r, x in zip(ranks, d) if x > 0)
    mean = n * (n + 1) / 4
    var = n * (n + 1) * (2 * n + 1) / 24 - ties / 48
    if var <= 0:
        return 0.5
    z = (w - mean - 0.5) / math.sqrt(var)  # continuity correction
    return 0.5 * math.erfc(z / math.sqrt(2))


def quartiles(values: list[float]) -> tuple[float, float, float]:
    finite = sorted(values)
    if len(finite) < 2:
        return (finite[0],) * 3 if finite else (math.nan,) * 3
    q = statistics.quantiles(finite, n=4, method="inclusive")
    return q[0], statistics.median(finite), q[2]


def targets(tbl: curve_table.Table, metric: str, sign: float) -> tuple[float, float, int]:
    """The table's top-5 % value (configurations ranked by their seed-0 best), its best
    value, and how many configurations."""
    bests = []
    for runs in tbl.configs().values():
        run = min(runs, key=lambda r: r.seed)
        values = [sign * v for v in run.metrics.get(metric, []) if not math.isnan(v)]
        if values:
            bests.append(min(values))
    bests.sort()
    k = max(1, math.ceil(0.05 * len(bests)))
    return sign * bests[k - 1], sign * bests[0], len(bests)


def run_arms(args) -> dict:
    from orchestrator.run.search_recipe import RECIPES

    tbl = curve_table.read(args.table)
    lookup = Lookup(tbl)
    results = {}
    for label in args.arms:
        _, overrides, recipe = ARMS[label]
        base = [f"search.num_trials={args.max_trials}", "search.initial_points=[]"]
        if recipe is not None:  # an Optuna recipe, whatever algorithm the config names
            base.append("search.algorithm=optuna")
        if args.space and not any(o.startswith("search_space=") for o in overrides):
            base.append(f"search_space={args.space}")  # the arms that do not name their own
        cfg, plan = load(args.config, base + overrides)
        metric, sign = cfg.search.metric, (1.0 if plan.mode == "min" else -1.0)
        demo = load(args.config, [])[0].search
        budget = args.budget or demo.budget or cfg.training.max_steps * demo.num_trials
        top5, best, n = targets(tbl, metric, sign)
        outcomes, began = [], time.perf_counter()
        for k in range(args.replays):
            # every arm runs to 4 x budget (its figures are read off the curve), whatever
            # search.budget the config has
            cfg_k = cfg.model_copy(update={"search": cfg.search.model_copy(
                update={"seed": k, "budget": None})})
            outcomes.append(replay(cfg_k, plan, lookup, seed=k, max_spent=4 * budget,
                                   concurrency=args.concurrency,
                                   recipe=RECIPES[recipe] if recipe else None))
        results[label] = {
            "to_top5": [reach(o.curve, top5, sign) for o in outcomes],
            "to_2pct": [reach(o.curve, best * (1 + 0.02 * sign), sign) for o in outcomes],
            "best": {m: [best_within(o.curve, m * budget, sign) for o in outcomes]
                     for m in (1, 2, 4)},
            "trials": [len(o.trials) for o in outcomes],
            "seconds": time.perf_counter() - began,
        }
        print(f"{label}: {args.replays} replays in {results[label]['seconds']:.0f} s", file=sys.stderr,
              flush=True)
    return {"results": results, "budget": budget, "top5": top5, "best": best, "configs": n,
            "metric": metric, "sign": sign, "runs": len(tbl.runs)}


def summarise(out: dict) -> dict:
    res, sign = out["results"], out["sign"]
    ref = res.get(RANDOM)
    summary = {}
    for label, r in res.items():
        q1, med, q3 = quartiles(r["to_top5"])
        row = {"steps_to_top5_median": med, "steps_to_top5_iqr": [q1, q3],
               "reached_top5": sum(math.isfinite(x) for x in r["to_top5"]),
               "steps_to_2pct_median": quartiles(r["to_2pct"])[1],
               "best_at": {f"{m}x": statistics.median(v) for m, v in r["best"].items()},
               "trials_median": statistics.median(r["trials"]), "default": label == DEFAULT_ARM}
        if ref is not None:
            mine, theirs = r["best"][1], ref["best"][1]
            diffs = [sign * (b - a) for a, b in zip(mine, theirs)]  # > 0: the arm is better
            row["share_at_least_random"] = sum(x >= 0 for x in diffs) / len(diffs)
            row["p_better_than_random"] = signed_rank_p(diffs)
            rmed = quartiles(ref["to_top5"])[1]
            row["compute_vs_random"] = med / rmed if math.isfinite(rmed) and rmed else None
        summary[label] = row
    return summary


def _fmt(x) -> str:
    return "not reached" if x is None or (isinstance(x, float) and math.isinf(x)) else f"{x:g}"


def render(out: dict, summary: dict, args) -> str:
    rows = []
    for label, s in summary.items():
        q1, q3 = s["steps_to_top5_iqr"]
        name = f"{label}: {ARMS[label][0]}"
        name = f"**{name}** (default)" if s["default"] else name
        rows.append([name, f"{_fmt(s['steps_to_top5_median'])} ({_fmt(q1)}-{_fmt(q3)})",
                     f"{s['reached_top5']}/{args.replays}",
                     "-" if s.get("compute_vs_random") is None else f"{s['compute_vs_random']:.2f}",
                     _fmt(s["steps_to_2pct_median"]),
                     " / ".join(f"{v:.1f}" for v in s["best_at"].values()),
                     f"{100 * s.get('share_at_least_random', math.nan):.0f} %",
                     f"{s.get('p_better_than_random', math.nan):.2g}",
                     f"{s['trials_median']:g}"])
    body = table(["arm", "steps to the top 5 %, median (IQR)", "reached", "vs random",
                  "steps to within 2 % of the best", f"best {out['metric']} at 1x / 2x / 4x",
                  "paired: >= random at 1x", "signed-rank p", "trials"], rows)
    body += (f"\n\n{args.replays} replays per arm on `{args.table}` ({out['configs']} "
             f"configurations, {out['runs']} recorded runs); {args.concurrency} trials at a time; "
             f"budget {out['budget']} training steps (the config's search.budget, else "
             f"num_trials x max_steps), replays run to 4x. Top 5 %: {out['metric']} {out['top5']:g} (configurations ranked by their "
             f"seed-0 best); the table's best: {out['best']:g}. Steps counted as "
             f"benchmarks/search_efficiency.py counts them (at each report, the sum over trials "
             f"of the latest step each reported). \"vs random\": median steps to the top 5 % "
             f"over random search's (every trial to max_steps). Paired: replay k of each arm "
             f"against replay k of random search (search.seed = k).")
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=ROOT / "benchmarks/tables/demo_curves.csv")
    parser.add_argument("--config", type=Path, default=ROOT / "examples/demo_cpu.yaml")
    parser.add_argument("--replays", type=int, default=50)
    parser.add_argument("--arms", default=",".join(ARMS),
                        help="comma-separated arm names (default: all): " +
                        "; ".join(f"{k}: {v[0]}" for k, v in ARMS.items()))
    parser.add_argument("--budget", type=int, default=None,
                        help="training steps (default: the config's search.budget, else its "
                        "num_trials x max_steps)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--space", default=None,
                        help="the search space (a preset) of the arms that do not name their own "
                        "(default: the config's own); the auto arms search search_space: auto")
    parser.add_argument("--max-trials", type=int, default=1000,
                        help="search.num_trials of the replayed sweeps (the budget ends them)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary line")
    parser.add_argument("--record", action="store_true", help="write docs/benchmarks.md")
    args = parser.parse_args()
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        parser.error(f"--arms: unknown {unknown}; known: {list(ARMS)}")
    if RANDOM not in args.arms:
        args.arms.insert(0, RANDOM)
    import logging

    logging.disable(logging.WARNING)  # Optuna's and Ray's per-trial chatter
    warnings.filterwarnings("ignore", message=".*experimental feature.*")
    began = time.perf_counter()
    out = run_arms(args)
    summary = summarise(out)
    if args.json:
        print(json.dumps({"default": DEFAULT_ARM, "budget": out["budget"], "top5": out["top5"],
                          "replays": args.replays, "arms": summary}, default=str))
    else:
        print(render(out, summary, args))
    print(f"wall time {time.perf_counter() - began:.0f} s", file=sys.stderr)
    if args.record:
        record("Search replay: compute to the top 5 % of configurations", render(out, summary, args)
               + f"\n\nCommand: `python benchmarks/search_replay.py {' '.join(sys.argv[1:])}`.")


if __name__ == "__main__":
    main()
