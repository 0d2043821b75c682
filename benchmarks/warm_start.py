"""Warm trials: time from a trial's start to its first training step, cold vs warm.

    python benchmarks/warm_start.py [--repeats 3] [--hidden 1536 --layers 16]

A cold trial loads and quantizes the base model (a new worker process); a warm one runs in a
worker that kept it from its previous trial (``resources.warm_start``, Ray actor reuse) and
only swaps the LoRA adapter. The base model is a randomly initialised Llama, big enough that
loading and quantizing it takes seconds (saved once to the cache, with the builtin model's
tokenizer); each repetition runs a cold trial, then a warm one, in one process through the
trainable's own entry point (``run_trial``), and takes the ``start_seconds`` it reports.
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


def big_model(hidden: int, layers: int) -> Path:
    """A random Llama of this size beside the builtin one in the cache (built once)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from trainables import tiny_llama

    tiny = tiny_llama.ensure_built()
    dest = tiny_llama.cache_root() / f"bench-llama-h{hidden}-l{layers}"
    if (dest / "config.json").is_file():
        return dest
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden,
                         intermediate_size=int(hidden * 8 / 3) // 64 * 64,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64,
                         num_key_value_heads=hidden // 128, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    tmp = Path(tempfile.mkdtemp(prefix=".bench-llama-", dir=dest.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(dest)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--layers", type=int, default=16)
    args = parser.parse_args()

    from trainables import warm
    from trainables.trial import run_trial

    path = big_model(args.hidden, args.layers)
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    s = tiny_spec({"max_eval_samples": 8}, max_steps=1, eval_steps=1)
    s = s.replace(model={**s.model, "name_or_path": str(path)}, warm_start=True)
    cold, warm_, first = [], [], []
    out = Path(tempfile.mkdtemp(prefix="bench-warm-"))
    try:
        for i in range(args.repeats):
            warm.forget()
            t0 = time.perf_counter()
            cold.append(run_trial(s, output_dir=out / f"c{i}")[0]["start_seconds"])
            first.append(time.perf_counter() - t0)
            h = run_trial(s, output_dir=out / f"w{i}")[0]
            assert h["warm_start"] == 1
            warm_.append(h["start_seconds"])
            print(f"repeat {i + 1}: cold {cold[-1]:.2f} s, warm {warm_[-1]:.2f} s", flush=True)
    finally:
        warm.forget()
        shutil.rmtree(out, ignore_errors=True)
    ratios = [c / w for c, w in zip(cold, warm_)]
    body = table(
        ["trial start to first training step", "seconds, median (min-max)"],
        [["cold (loads and quantizes the base model)", spread(cold)],
         ["warm (kept base model, new adapter)", spread(warm_)],
         ["**cold / warm**", f"**{spread(ratios)}×**"]])
    body += (f"\n\nBase model: random Llama, hidden {args.hidden}, {args.layers} layers, "
             f"{size / 1e9:.2f} GB of bf16 weights, NF4 4-bit; {args.repeats} repetitions of a "
             f"cold then a warm trial in one process (`run_trial`, as a reused Ray worker runs "
             f"it); a whole cold trial of 1 step took {spread(first)} s.")
    record("Warm trials: trial start to first training step", body)


if __name__ == "__main__":
    main()
