"""What judging adapters by their answers costs: task evaluation's share of a trial, and batched
against one-prompt-at-a-time generation.

    python benchmarks/task_eval_cost.py [--config examples/demo_cpu.yaml] [--repeats 3]

One trial of the demo (its config, its first initial point, the sweep's fixed settings, one
thread as in the demo's sweep) is trained with ``run_trial``; every evaluation reports
``task_seconds``, the time its generation and scoring took. The share is their sum over the
trial's wall time (model load to last checkpoint). Then, on the adapter of the trial's last
checkpoint, the eval prompts are answered greedily ``--repeats`` times with the config's
``evaluation.batch_size`` and with a batch of 1 (alternating), and the answers compared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import ROOT, record, spread, table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "examples/demo_cpu.yaml"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from orchestrator.config.loading import load_config
    from orchestrator.config.preflight import preflight
    from trainables import tiny_llama
    from trainables.task_eval import TaskEval
    from trainables.trial import build_trainer, run_trial

    cfg, derived = load_config(Path(args.config))
    if not cfg.evaluation.scorers:
        raise SystemExit(f"{args.config} has no evaluation.scorers: nothing to measure")
    if tiny_llama.is_builtin(cfg.model.name_or_path):
        tiny_llama.resolve(cfg.model.name_or_path)
    spec = preflight(cfg, derived)
    point = cfg.search.initial_points[0] if cfg.search.initial_points else {}
    s = spec.for_trial(point)
    torch.set_num_threads(max(1, int(cfg.resources.cpu)))
    with tempfile.TemporaryDirectory(prefix="bench-task-") as out:
        started = time.perf_counter()
        history = run_trial(s, output_dir=out)
        trial_s = time.perf_counter() - started
        task_s = sum(h.get("task_seconds", 0.0) for h in history)
        last = Path(out) / f"checkpoint-{history[-1]['step']}"
        trainer = build_trainer(s, str(Path(out) / "probe"), save=False, adapter_dir=str(last))
        judge = TaskEval(s.task_eval, trainer.eval_dataset, trainer.processing_class)
        batch = int(s.task_eval["batch_size"])
        timings: dict[int, list[float]] = {batch: [], 1: []}
        answers: dict[int, list[str]] = {}
        for _ in range(args.repeats):
            for size in (batch, 1):
                judge.task = {**judge.task, "batch_size": size}
                t0 = time.perf_counter()
                answers[size] = judge.predict(trainer.model)
                timings[size].append(time.perf_counter() - t0)
    prompts = len(judge.prompts)
    same = sum(a == b for a, b in zip(answers[batch], answers[1]))
    speedups = [one / many for one, many in zip(timings[1], timings[batch])]
    rows = [["task evaluation share of the trial", f"**{task_s / trial_s:.1%}**",
             f"{task_s:.1f} s of {trial_s:.1f} s, {len(history)} evaluations of {prompts} "
             f"prompts, {s['training']['max_steps']} steps"],
            [f"generation, batch {batch} vs batch 1 (speed-up)", f"**{spread(speedups)}x**",
             f"{statistics.median(timings[batch]):.2f} s vs {statistics.median(timings[1]):.2f} s "
             f"for {prompts} prompts; same answers for {same}/{prompts}"]]
    body = table(["what", "figure", "detail"], rows)
    body += (f"\n\n{args.config}: model {cfg.model.name_or_path} "
             f"({cfg.model.quantization.mode}), max_new_tokens {cfg.evaluation.max_new_tokens}, "
             f"{int(cfg.resources.cpu)} thread(s) as one trial of the sweep; trial point {point}.")
    record("Task evaluation cost", body)


if __name__ == "__main__":
    main()
