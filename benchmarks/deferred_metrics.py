"""Per-step reads for logging, and throughput, with and without ``training.deferred_metrics``.

    python benchmarks/deferred_metrics.py [--repeats 3] [--steps 60] [--logging-steps 5]
                                          [--model NAME_OR_PATH]

"TRL's reads" is a trial as TRL and the Trainer run it (``deferred_metrics: false``: TRL turns
its token accuracy, entropy and token count into Python numbers on every step, the Trainer
checks the loss for NaN on every step); "deferred" keeps them on the device until a log.
Two measurements per mode:

- reads of tensor values into Python per training step (``benchmarks/host_reads.py``), split
  into the reads for logging (the loss and the Trainer's step) and everything else (the model's
  attention-mask check, the optimizer's step counter), on steps without a log and per log.
  On a GPU only reads of GPU tensors count: each is a device sync. On a CPU every tensor is a
  host tensor, so all reads count. One counted run per mode (counting slows every torch call).
- tokens/s of ``trainer.train()`` without counting, alternating the modes, ``--repeats`` each.
  On a CPU a read costs nothing, so expect ~1.0 there; the gain is a GPU's.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.host_reads import HostReads, is_logging  # noqa: E402
from benchmarks.report import record, spread, table  # noqa: E402
from benchmarks.throughput import _tokens_per_second  # noqa: E402
from tests.test_trainable import tiny_spec  # noqa: E402

_MODES = (("TRL's reads", False), ("deferred", True))


def _spec(args, deferred: bool):
    # No evaluation or checkpoint: the step and the log are what is measured.
    s = tiny_spec(max_steps=args.steps, eval_steps=args.steps + 1,
                  logging_steps=args.logging_steps, deferred_metrics=deferred)
    if args.model:
        s = s.replace(model={**s.model, "name_or_path": args.model})
    return s


def _trainer(s, out: Path, callbacks=()):
    from trainables.trial import _limit_threads, build_trainer

    _limit_threads(s)
    return build_trainer(s, str(out), callbacks=list(callbacks), save=False)


def _count(s, out: Path, logging_steps: int) -> dict[str, float]:
    """Median reads per step without a log, and per step with one, split by what reads."""
    import torch

    counter = HostReads(device_only=torch.cuda.is_available())
    trainer = _trainer(s, out, [counter.callback()])
    with counter:
        trainer.train()
    steps = range(2, s.training["max_steps"])  # not the first (set-up) nor the last (end)

    def per_step(logging: bool, logged: bool) -> float:
        return statistics.median(counter.reads(step, logging=logging)
                                 for step in steps if (step % logging_steps == 0) == logged)

    quiet = next(step for step in steps if step % logging_steps)
    return {"quiet_logging": per_step(True, False), "quiet_other": per_step(False, False),
            "logged_logging": per_step(True, True), "logged_other": per_step(False, True),
            "other_callers": {caller: n for caller, n in counter.by_step[quiet].items()
                              if not is_logging(caller)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--logging-steps", type=int, default=5)
    parser.add_argument("--model", default=None, help="base model (default: builtin tiny Llama)")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench-deferred-"))
    counts, speed = {}, {name: [] for name, _ in _MODES}
    try:
        for name, deferred in _MODES:
            counts[name] = _count(_spec(args, deferred), out / f"count-{deferred}",
                                  args.logging_steps)
            print(f"{name}: {counts[name]}", flush=True)
        for i in range(args.repeats):
            for name, deferred in _MODES:
                trainer = _trainer(_spec(args, deferred), out / f"{name}{i}")
                speed[name].append(_tokens_per_second(trainer))
                print(f"repeat {i + 1} {name}: {speed[name][-1]:.0f} tokens/s", flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)

    import torch

    what = "device syncs (reads of GPU tensors)" if torch.cuda.is_available() else \
        "reads of tensor values (CPU tensors; on a GPU, those of GPU tensors sync)"
    rows = []
    for name, _ in _MODES:
        c = counts[name]
        rows.append([name, f"{c['quiet_logging']:g}", f"{c['quiet_other']:g}",
                     f"{c['logged_logging']:g}", spread(speed[name])])
    ratios = [d / s for d, s in zip(speed["deferred"], speed["TRL's reads"])]
    rows.append(["**deferred / TRL's reads**", "", "", "", f"**{spread(ratios)}**"])
    body = table(["metrics", "logging reads, step without a log", "other reads, step without a log",
                  f"logging reads, step with a log (every {args.logging_steps})",
                  "tokens/s, median (min-max)"], rows)
    other = sorted(counts["deferred"]["other_callers"].items(), key=lambda kv: -kv[1])
    body += (f"\n\nCounted: {what}, median over steps 2-{args.steps - 1}; \"logging\" = read by "
             "TRL's `compute_loss`/`log` or the Trainer's step and log "
             "(`benchmarks/host_reads.py`: LOGGING), \"other\" = the rest (on a step without a "
             "log in the deferred run: "
             + (", ".join(f"`{caller}` {n}" for caller, n in other) or "none") + "). "
             f"Model {args.model or 'builtin tiny Llama (NF4)'}, {args.steps} steps of batch "
             f"{tiny_spec().training['per_device_train_batch_size']}, no evaluation, "
             f"{tiny_spec().threads} threads; tokens/s alternating, {args.repeats} "
             "repetitions each; the ratio is per pair of runs.")
    record("Deferred metric reads (training.deferred_metrics)", body)


if __name__ == "__main__":
    main()
