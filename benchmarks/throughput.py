"""Trainable throughput: tokens/s of a qlora-sweep trial vs a plain TRL SFTTrainer script.

    python benchmarks/throughput.py [--repeats 3] [--steps 60]

Both train the same base model (the builtin tiny Llama, NF4 4-bit), on the same data, with the
same LoRA and training settings, evaluating every ``eval_steps`` and saving a checkpoint there.
"ours" is the trainable's own Trainer (``trainables.trial.build_trainer`` with the callback that
reports each evaluation, as a trial runs it); "plain" is what a user would write with TRL and
PEFT directly (below, no qlora-sweep code). Tokens/s = the tokens TRL counted as trained /
the wall time of ``trainer.train()``. The two alternate, ``--repeats`` times each.
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


def _tokens_per_second(trainer) -> float:
    start = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - start
    tokens = max(float(e.get("num_tokens", 0)) for e in trainer.state.log_history)
    return tokens / elapsed


def ours(s, out: Path) -> float:
    from trainables.callbacks import ReportCallback
    from trainables.trial import _limit_threads, build_trainer

    _limit_threads(s)
    trainer = build_trainer(s, str(out), callbacks=[ReportCallback(lambda m, c: None)])
    return _tokens_per_second(trainer)


def plain(s, out: Path) -> float:
    """A plain QLoRA script: transformers + bitsandbytes + PEFT + TRL, nothing of ours."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, set_seed
    from trl import SFTConfig, SFTTrainer

    from trainables import tiny_llama

    torch.set_num_threads(s.threads)
    path, t, lora = tiny_llama.ensure_built(), s.training, s.lora
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, quantization_config=(
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                           bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32)))
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    set_seed(t["seed"])
    model = get_peft_model(model, LoraConfig(
        r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
        target_modules=lora["resolved_target_modules"], task_type="CAUSAL_LM"))
    data = s.data
    train = load_dataset("json", data_files=data["train"]["path"], split="train")
    evalset = load_dataset("json", data_files=data["eval"]["path"], split="train")
    evalset = evalset.select(range(data["max_eval_samples"]))
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=train,
                         eval_dataset=evalset, args=SFTConfig(
        output_dir=str(out), max_steps=t["max_steps"], learning_rate=t["learning_rate"],
        per_device_train_batch_size=t["per_device_train_batch_size"],
        per_device_eval_batch_size=t["per_device_eval_batch_size"],
        eval_strategy="steps", eval_steps=t["eval_steps"], save_steps=t["eval_steps"],
        logging_steps=t["logging_steps"], max_length=data["max_length"], seed=t["seed"],
        lr_scheduler_type=t["lr_scheduler_type"], warmup_steps=0, optim="adamw_torch",
        report_to="none", disable_tqdm=True, use_cpu=torch.cuda.device_count() == 0,
        gradient_checkpointing=t["gradient_checkpointing"],  # TRL's default is on
        # As the trial sets it: bf16 autocast only on a GPU that has it. (TrainingArguments
        # turns it on by default where the CPU supports bf16, about 5x slower here.)
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported()))
    return _tokens_per_second(trainer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    s = tiny_spec(max_steps=args.steps, eval_steps=args.steps // 3)
    results: dict[str, list[float]] = {"ours": [], "plain": []}
    out = Path(tempfile.mkdtemp(prefix="bench-tps-"))
    try:
        for i in range(args.repeats):
            for name, fn in (("plain", plain), ("ours", ours)):
                results[name].append(fn(s, out / f"{name}{i}"))
                print(f"repeat {i + 1} {name}: {results[name][-1]:.0f} tokens/s", flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    ratios = [o / p for o, p in zip(results["ours"], results["plain"])]
    body = table(["trainer", "tokens/s, median (min-max)"],
                 [["plain TRL SFTTrainer script", spread(results["plain"])],
                  ["qlora-sweep trial", spread(results["ours"])],
                  ["**trial / plain**", f"**{spread(ratios)}**"]])
    body += (f"\n\nBuiltin tiny Llama (NF4), {args.steps} steps of batch "
             f"{s['training']['per_device_train_batch_size']}, max_length "
             f"{s['data']['max_length']}, LoRA r={s['lora']['r']} on q/k/v/o, an evaluation "
             f"({s['data']['max_eval_samples']} examples) and a checkpoint every "
             f"{s['training']['eval_steps']} steps in both, {s['threads']} threads; "
             f"alternating, {args.repeats} repetitions each.")
    record("Trainable throughput vs a plain TRL script", body)


if __name__ == "__main__":
    main()
