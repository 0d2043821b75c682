"""Orchestration overhead: a sweep of N identical trials vs the same trainings as plain scripts.

    python benchmarks/overhead.py [--trials 2] [--steps 400] [--repeats 3]

"plain": each training run back-to-back as a plain TRL script (``benchmarks/throughput.py``'s,
no qlora-sweep code) in a process of its own, with one thread, as a trial with
``resources.cpu: 1`` gets; their summed wall time divided by the sweep's concurrency is what
the sweep would take with no overhead at all. "sweep": ``qlora-sweep run`` of the same N
trainings (one learning rate, random search, no early stopping, 2 at a time on 2 CPUs):

* the whole command (Ray start, pre-flight, baseline evaluation and tokenizing, trials,
  leaderboard), and
* its trials phase alone (``status.json``: from the Tuner's start to its end).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import ROOT, record, spread, table  # noqa: E402

LR = 3e-3


def plain_script(steps: int) -> float:
    code = (f"from benchmarks.throughput import plain\n"
            f"from tests.test_trainable import tiny_spec\n"
            f"import tempfile\n"
            f"s = tiny_spec(max_steps={steps}, eval_steps={steps // 4}, learning_rate={LR})\n"
            f"s = s.replace(threads=1)\n"
            f"plain(s, tempfile.mkdtemp())\n")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def sweep(root: Path, name: str, *, trials: int, steps: int) -> tuple[float, float]:
    from tests.test_trainable import tiny_spec

    s = tiny_spec()
    config = root / f"{name}.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"name_or_path": "builtin:tiny-llama"},
        "data": {"train": {"path": s.data["train"]["path"]},
                 "eval": {"path": s.data["eval"]["path"]},
                 "max_length": s.data["max_length"],
                 "max_eval_samples": s.data["max_eval_samples"]},
        "lora": {"r": 8, "alpha_ratio": 2.0, "dropout": 0.05, "target_modules": "attention"},
        "training": {"max_steps": steps, "eval_steps": steps // 4, "logging_steps": 5,
                     "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16,
                     "warmup_ratio": 0.0, "seed": 3},
        "search_space": {"training.learning_rate": {"choice": [LR]}},
        "search": {"algorithm": "random", "num_trials": trials},
        "scheduler": {"type": "none"},
        "resources": {"cpu": 1},
        "storage": {"path": str(root), "name": name},
    }))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "orchestrator", "run", str(config)], cwd=ROOT,
                   check=True, capture_output=True)
    whole = time.perf_counter() - start
    status = json.loads((root / name / "status.json").read_text())
    first = min(datetime.fromisoformat(t["started_at"]) for t in status["trials"])
    last = max(datetime.fromisoformat(t["ended_at"]) for t in status["trials"])
    return whole, (last - first).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    concurrency = 2
    ideal, whole, phase, each = [], [], [], []
    root = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    for i in range(args.repeats):
        scripts = [plain_script(args.steps) for _ in range(args.trials)]
        each += scripts
        ideal.append(sum(scripts) / concurrency)
        w, p = sweep(root, f"o{i}", trials=args.trials, steps=args.steps)
        whole.append(w)
        phase.append(p)
        print(f"repeat {i + 1}: plain {sum(scripts):.1f} s / {concurrency} = {ideal[-1]:.1f} s; "
              f"sweep {w:.1f} s, its trials {p:.1f} s", flush=True)
    import math
    import statistics

    fixed = [w - p for w, p in zip(whole, phase)]
    per_trial = statistics.median(p / d for p, d in zip(phase, ideal))
    # whole(N) ~ per_trial x N x t / c + fixed: the N from which whole / ideal <= 1.05.
    t = statistics.median(each)
    reach = (math.ceil(statistics.median(fixed) * concurrency / (t * (1.05 - per_trial)))
             if per_trial < 1.05 else None)
    body = table(["", "seconds, median (min-max)"], [
        ["one plain training script", spread(each)],
        [f"plain scripts back-to-back / {concurrency}", spread(ideal)],
        ["`qlora-sweep run`, whole command", spread(whole)],
        ["`qlora-sweep run`, trials phase", spread(phase)],
        ["**whole command / ideal**", f"**{spread([w / d for w, d in zip(whole, ideal)])}**"],
        ["**trials phase / ideal**", f"**{spread([p / d for p, d in zip(phase, ideal)])}**"],
        ["fixed cost: whole command - trials phase", spread(fixed)],
        ["whole command / ideal <= 1.05 from (projected)",
         f"{reach} trials of this length" if reach else "never: the trials phase is over 1.05"]])
    body += (f"\n\n{args.trials} identical trainings of {args.steps} steps (tiny Llama, NF4, "
             f"batch 8, an evaluation and a checkpoint every {args.steps // 4} steps), "
             f"{concurrency} at a time in the sweep; {args.repeats} repetitions. The "
             f"projection: whole(N) = (trials phase / ideal) x N x (one script) / "
             f"{concurrency} + the fixed cost, both measured here.")
    record("Orchestration overhead", body)


if __name__ == "__main__":
    main()
