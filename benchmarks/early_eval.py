"""``scheduler.early_eval_samples``: does an eval subset keep ASHA's early-rung ranking, and what
does it save?

    python benchmarks/early_eval.py [--trials 12] [--rungs 20 40] [--sizes 25 50 100] [--subsets 3] [--lr 1e-4 1e-2]

``--trials`` configurations are drawn (seeded) from the demo's search space (``cpu-demo``: r,
alpha ratio, dropout, target modules, learning rate) and each is trained, with the trainable's
own Trainer, on the demo pricing data with the builtin tiny Llama (NF4), a quarter of the data
held out as the eval set (400 rows). At each rung step every trial is evaluated on the whole
eval set and on ``--subsets`` random subsets of each size in ``--sizes`` (drawn as a sweep
draws them, ``trainables.early_eval.subset_indices``), each evaluation timed.

Per subset size and rung, over the subsets (median and range): the Spearman rank correlation
of the trials' subset losses with their whole-set losses; the share of trials whose ASHA
decision (keep the best half, reduction factor 2) is the same on the subset as on the whole
set; whether the whole set's best trial is kept; and the eval time, subset / whole set. Last,
the time of a trial up to the last rung, with every rung evaluated on the subset / on the whole
set (its measured training time plus its measured evaluations).
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import record, spread, table  # noqa: E402
from tests.test_trainable import tiny_spec  # noqa: E402

GROUPS = {"attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
          "mlp": ["gate_proj", "up_proj", "down_proj"]}
GROUPS["all-linear"] = GROUPS["attention"] + GROUPS["mlp"]


def draw(rng: random.Random, lr: tuple[float, float]) -> dict:
    """One configuration from search_spaces/cpu-demo.yaml (learning rates in ``lr``)."""
    return {"lora.r": rng.choice([4, 8, 16]), "lora.alpha_ratio": rng.choice([1.0, 2.0, 4.0]),
            "lora.dropout": rng.choice([0.0, 0.05]),
            "lora.target_modules": rng.choice(["attention", "mlp", "all-linear"]),
            "training.learning_rate": math.exp(rng.uniform(math.log(lr[0]), math.log(lr[1])))}


def spearman(a: list[float], b: list[float]) -> float:
    from orchestrator.observe.plots import rank_correlation

    rho = rank_correlation(a, b)
    return float("nan") if rho is None else rho


def kept(losses: list[float]) -> set[int]:
    """The trials ASHA keeps at a rung with reduction factor 2: the better half."""
    order = sorted(range(len(losses)), key=lambda i: losses[i])
    return set(order[: max(1, len(losses) // 2)])


def train(searched: dict, *, rungs: list[int], sizes: list[int], subsets: int, max_steps: int,
          out: Path) -> dict:
    """Train one configuration (scheduled for ``max_steps``) up to the last rung; at each
    rung, evaluate on the whole eval set and on every subset. Returns losses and timings."""
    from transformers import TrainerCallback

    from trainables.early_eval import subset_indices
    from trainables.trial import _limit_threads, build_trainer

    base = tiny_spec({"eval": None, "eval_fraction": 0.25, "max_eval_samples": None},
                     max_steps=max_steps, eval_steps=10 * max_steps, seed=3,
                     lr_scheduler_type="cosine", warmup_ratio=0.05)
    s = base.replace(target_groups=GROUPS).for_trial(searched)
    _limit_threads(s)
    result = {"whole": {}, "subset": {}, "eval_s": {"whole": [], "subset": {n: [] for n in sizes}}}

    class AtRungs(TrainerCallback):
        trainer = None

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if step not in rungs:
                return
            full = self.trainer.eval_dataset
            t0 = time.perf_counter()
            result["whole"][step] = self.trainer.evaluate(eval_dataset=full)["eval_loss"]
            result["eval_s"]["whole"].append(time.perf_counter() - t0)
            for n in sizes:
                for seed in range(subsets):
                    part = full.select(subset_indices(len(full), n, seed))
                    t0 = time.perf_counter()
                    loss = self.trainer.evaluate(eval_dataset=part)["eval_loss"]
                    result["eval_s"]["subset"][n].append(time.perf_counter() - t0)
                    result["subset"][(n, seed, step)] = loss
            if step == rungs[-1]:
                control.should_training_stop = True
            return control

    callback = AtRungs()
    trainer = build_trainer(s, str(out), callbacks=[callback], save=False)
    callback.trainer = trainer
    result["eval_rows"] = len(trainer.eval_dataset)
    start = time.perf_counter()
    trainer.train()
    evals = sum(result["eval_s"]["whole"]) + sum(sum(v) for v in result["eval_s"]["subset"].values())
    result["train_s"] = time.perf_counter() - start - evals
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--rungs", type=int, nargs="+", default=[20, 40])
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--subsets", type=int, default=3, help="subsets drawn per size")
    parser.add_argument("--max-steps", type=int, default=160,
                        help="steps the learning-rate schedule is for (the demo's)")
    parser.add_argument("--lr", type=float, nargs=2, default=[1e-4, 1e-2],
                        help="learning-rate range (the demo's by default; narrower: closer "
                             "trials, a harder ranking)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    configs = [draw(rng, tuple(args.lr)) for _ in range(args.trials)]
    out = Path(tempfile.mkdtemp(prefix="bench-early-eval-"))
    trials = []
    try:
        for i, searched in enumerate(configs):
            trials.append(train(searched, rungs=args.rungs, sizes=args.sizes,
                                subsets=args.subsets, max_steps=args.max_steps,
                                out=out / str(i)))
            print(f"trial {i + 1}/{args.trials} {searched}: whole-set losses "
                  f"{trials[-1]['whole']}", flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)

    rows = []
    whole_s = statistics.median(s for t in trials for s in t["eval_s"]["whole"])
    for n in args.sizes:
        sub_s = statistics.median(s for t in trials for s in t["eval_s"]["subset"][n])
        for step in args.rungs:
            whole = [t["whole"][step] for t in trials]
            rho, same, best = [], [], []
            for seed in range(args.subsets):
                part = [t["subset"][(n, seed, step)] for t in trials]
                rho.append(spearman(part, whole))
                on_whole, on_part = kept(whole), kept(part)
                same.append(sum((i in on_whole) == (i in on_part)
                                for i in range(len(trials))) / len(trials))
                best.append(float(min(range(len(whole)), key=whole.__getitem__) in on_part))
            rows.append([n, step, spread(rho), spread(same), f"{sum(best):.0f}/{len(best)}",
                         f"{sub_s / whole_s:.3g}"])
        # A trial to the last rung, every rung evaluated on the subset vs on the whole set.
        ratio = [(t["train_s"] + len(args.rungs) * statistics.median(t["eval_s"]["subset"][n]))
                 / (t["train_s"] + len(args.rungs) * statistics.median(t["eval_s"]["whole"]))
                 for t in trials]
        rows.append([n, "trial time", "", "", "", f"**{spread(ratio)}**"])
    eval_rows = trials[0]["eval_rows"]
    body = table(["subset rows", "rung step", "Spearman rho, subset vs whole",
                  "same ASHA decision (rf 2)", "whole-set best kept", "eval time subset / whole"],
                 rows)
    body += (f"\n\n{args.trials} trials drawn (seed {args.seed}) from the cpu-demo space "
             f"(learning rate {args.lr[0]:g}-{args.lr[1]:g}), "
             f"builtin tiny Llama (NF4), demo pricing data with {eval_rows} rows held out as "
             f"the eval set, batch 8, a cosine schedule over {args.max_steps} steps; at steps {args.rungs} each trial is "
             f"evaluated on the whole eval set and on {args.subsets} subsets of each size "
             f"(medians and ranges over the subsets). 'trial time' rows: a trial to step "
             f"{args.rungs[-1]} with every rung evaluated on the subset / on the whole set "
             f"(its measured training time plus its measured evaluations), median and range "
             f"over the trials.")
    record("Early-rung evaluation on an eval subset (scheduler.early_eval_samples)", body)


if __name__ == "__main__":
    main()
