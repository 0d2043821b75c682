"""``data.packing``: the same trial with and without packed, padding-free training rows.

    python benchmarks/sequence_packing.py [--repeats 3] [--steps 60] [--max-length 128]

Both run the trainable's own Trainer (``build_trainer``, as a trial runs it) on the demo data
with the builtin tiny Llama (NF4), the same LoRA and training settings. Measured per run:
training examples per second (examples in the steps taken / wall time of ``train()``), real
tokens per second (the tokens TRL counted, pad tokens excluded), and the eval loss at the end
(the eval data is never packed, so the losses compare). Packed runs see more examples per step,
so their eval loss after the same number of steps is not the same experiment: it shows that
packing trains on more data per step, not that it learns better per example. The two
alternate, ``--repeats`` times each.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import record, spread, table  # noqa: E402
from tests.test_trainable import tiny_spec  # noqa: E402


def run(s, out: Path) -> dict:
    from trainables.callbacks import ReportCallback
    from trainables.trial import _limit_threads, build_trainer

    _limit_threads(s)
    callback = ReportCallback(lambda m, c: None)
    trainer = build_trainer(s, str(out), callbacks=[callback])
    rows = trainer.train_dataset
    per_row = (sum(len(x) for x in rows["seq_lengths"]) / len(rows)
               if "seq_lengths" in rows.column_names else 1.0)
    start = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - start
    steps = trainer.state.global_step
    examples = steps * s.training["per_device_train_batch_size"] * per_row
    tokens = max(float(e.get("num_tokens", 0)) for e in trainer.state.log_history)
    return {"examples/s": examples / elapsed, "tokens/s": tokens / elapsed,
            "eval_loss": callback.history[-1]["eval_loss"], "examples/step": examples / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    results: dict[bool, list[dict]] = {False: [], True: []}
    out = Path(tempfile.mkdtemp(prefix="bench-packing-"))
    try:
        for i in range(args.repeats):
            for packing in (False, True):
                s = tiny_spec({"max_length": args.max_length, "packing": packing},
                              max_steps=args.steps, eval_steps=args.steps // 3)
                results[packing].append(run(s, out / f"{packing}{i}"))
                print(f"repeat {i + 1} packing={packing}: {results[packing][-1]}", flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)

    def col(packing: bool, key: str) -> list[float]:
        return [r[key] for r in results[packing]]

    rows = [[name, spread(col(p, "examples/step")), spread(col(p, "examples/s")),
             spread(col(p, "tokens/s")), spread(col(p, "eval_loss"))]
            for name, p in (("padded batches (data.packing: false)", False),
                            ("packed, padding-free (data.packing: true)", True))]
    ex = [a["examples/s"] / b["examples/s"] for a, b in zip(results[True], results[False])]
    tok = [a["tokens/s"] / b["tokens/s"] for a, b in zip(results[True], results[False])]
    rows.append(["**packed / padded**", "", f"**{spread(ex)}**", f"**{spread(tok)}**", ""])
    body = table(["training rows", "examples/step", "examples/s", "tokens/s (no pads)",
                  f"eval loss at step {args.steps}"], rows)
    body += (f"\n\nBuiltin tiny Llama (NF4), demo pricing data, {args.steps} steps of batch "
             f"8, max_length {args.max_length}, LoRA r=8 on q/k/v/o, 2 threads, an evaluation "
             f"and a checkpoint every {args.steps // 3} steps; alternating, {args.repeats} "
             f"repetitions each. Packed runs see more examples per step: their eval loss is "
             f"after more data, not a like-for-like comparison.")
    record("Packing: packed, padding-free rows vs padded batches", body)


if __name__ == "__main__":
    main()
