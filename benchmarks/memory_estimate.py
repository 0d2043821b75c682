"""The trial memory estimate (``trainables/memory_estimate.py``) vs measured peak memory.

    python benchmarks/memory_estimate.py [--hidden 512 --layers 8] [--repeats 3]

Each configuration trains a few steps (and evaluates once) in a fresh process, through the
trainable's own entry point (``run_trial``), on data whose every example fills
``data.max_length`` (the estimate is for the longest batch). Measured: on a GPU, torch's peak
allocated memory; on a CPU, the process's peak resident memory while training minus its
resident memory before the model was loaded (glibc is told to return freed blocks at once,
so the peak follows live allocations). The model and the optimizer state are in both.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import ROOT, record, spread, table  # noqa: E402
from trainables.spec import TrialSpec  # noqa: E402

MiB = 2**20
# Freed blocks go back to the OS at once, so resident memory tracks live tensors.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def long_data(folder: Path, *, rows: int = 48, words: int = 400) -> dict:
    """Prompt/completion rows far longer than any max_length used here (truncated to it)."""
    import random

    rng = random.Random(0)
    vocab = "price item blue red large small steel cotton pack dollar fine old new box".split()
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in (("train", rows), ("eval", rows // 2)):
        path = folder / f"{split}.jsonl"
        with open(path, "w") as f:
            for _ in range(n):
                prompt = " ".join(rng.choice(vocab) for _ in range(8)) + "\n"
                completion = " ".join(rng.choice(vocab) for _ in range(words))
                f.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
        paths[split] = {"path": str(path), "local": True}
    return paths


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure_here(spec: TrialSpec, output_dir: str) -> dict:
    """In this process: load the base model, then train; peak bytes above the start."""
    import bitsandbytes  # noqa: F401  imports first, so that they are not counted
    import peft  # noqa: F401
    import torch
    import trl  # noqa: F401

    from trainables import warm
    from trainables.model import load_base_model
    from trainables.trial import run_trial

    cuda = torch.cuda.is_available()
    start = rss_kib("VmRSS") * 1024
    warm.base_model(spec.model, load_base_model, keep=True)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS (Linux)
    run_trial(spec.replace(warm_start=True), output_dir=output_dir)
    if cuda:
        return {"peak": torch.cuda.max_memory_allocated(), "device": "cuda"}
    return {"peak": rss_kib("VmHWM") * 1024 - start, "device": "cpu"}


def measure(spec: TrialSpec) -> dict:
    """:func:`measure_here` in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "spec.json").write_text(json.dumps(dataclasses.asdict(spec)))
        code = ("import json, sys\n"
                "from benchmarks.memory_estimate import measure_here\n"
                "from trainables.spec import TrialSpec\n"
                f"s = TrialSpec(**json.load(open({str(Path(tmp, 'spec.json'))!r})))\n"
                f"print('RESULT', json.dumps(measure_here(s, {str(Path(tmp, 'out'))!r})))\n")
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                              text=True, timeout=1200, env={**os.environ, **MALLOC_ENV})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"measuring failed: {(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def estimated(spec: TrialSpec) -> int:
    import torch

    from trainables.memory_estimate import estimate, model_shape

    return estimate(model_shape(spec.model), spec,
                    on_gpu=torch.cuda.is_available()).total


def configured(base: TrialSpec, model_dir: str, data: dict, *, r: int, batch: int,
               length: int, targets: str, checkpointing: bool = False) -> TrialSpec:
    groups = {"attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
              "all-linear": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                             "down_proj"]}
    s = base.replace(
        model={**base.model, "name_or_path": model_dir},
        data={**base.data, **data, "max_length": length, "max_eval_samples": batch},
        training={**base.training, "max_steps": 3, "eval_steps": 3,
                  "per_device_train_batch_size": batch, "per_device_eval_batch_size": batch,
                  "gradient_checkpointing": checkpointing},
        target_groups=groups, lora={**base.lora, "alpha": None})
    return s.for_trial({"lora.r": r, "lora.target_modules": targets})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from benchmarks.warm_start import big_model
    from tests.test_trainable import tiny_spec

    model_dir = str(big_model(args.hidden, args.layers))
    data = long_data(Path(tempfile.mkdtemp(prefix="qlora-mem-")))
    cases = [dict(r=8, batch=4, length=128, targets="attention"),
             dict(r=64, batch=4, length=128, targets="all-linear"),
             dict(r=16, batch=8, length=256, targets="all-linear"),
             dict(r=16, batch=8, length=256, targets="all-linear", checkpointing=True),
             dict(r=16, batch=16, length=512, targets="all-linear")]
    rows, ratios = [], []
    for case in cases:
        s = configured(tiny_spec(), model_dir, data, **case)
        est = estimated(s)
        peaks = []
        for i in range(args.repeats):
            peaks.append(measure(s)["peak"])
            print(f"{case}: estimate {est / MiB:.0f} MiB, measured {peaks[-1] / MiB:.0f} MiB",
                  flush=True)
        case_ratios = [p / est for p in peaks]
        ratios += case_ratios
        rows.append([f"r={case['r']}, {case['targets']}, batch {case['batch']} x "
                     f"{case['length']} tokens" + (", gradient checkpointing"
                                                   if case.get("checkpointing") else ""),
                     f"{est / MiB:.0f}", spread([p / MiB for p in peaks]),
                     spread(case_ratios)])
    body = table(["trial", "estimate, MiB", "measured peak, MiB", "measured / estimate"], rows)
    body += (f"\n\nAll {len(ratios)} measurements: measured / estimate = **{spread(ratios)}**. "
             f"Model: random Llama, hidden {args.hidden}, {args.layers} layers, NF4 with double "
             f"quantization; 3 steps and an evaluation per measurement, each in a fresh process "
             f"({args.repeats} repetitions); every example fills max_length. "
             + " ".join(__doc__.split("\n\n", 2)[2].split("The model")[0].split()
                        ).replace("``", "`"))
    record("Trial memory: estimate vs measured peak", body)


if __name__ == "__main__":
    main()
