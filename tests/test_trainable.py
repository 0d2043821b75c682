"""The trainable alone, without a Tuner: real 4-bit QLoRA for a few steps on the tiny model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from trainables.spec import TrialSpec
from trainables.trial import build_trainer, evaluate_baseline, run_trial

from .conftest import EXAMPLES


def tiny_spec(data: dict | None = None, **training) -> TrialSpec:
    """A trial's spec on the tiny model and the demo data; ``data`` and ``training`` change
    those sections."""
    base = {
        "model": {"name_or_path": "builtin:tiny-llama", "revision": None,
                  "trust_remote_code": False,
                  "quantization": {"mode": "4bit", "quant_type": "nf4", "double_quant": True,
                                   "compute_dtype": "auto"}},
        "data": {"train": {"path": str(EXAMPLES / "data/pricing_train.jsonl"), "local": True},
                 "eval": {"path": str(EXAMPLES / "data/pricing_eval.jsonl"), "local": True},
                 "format": "auto", "eval_fraction": 0.1, "max_length": 64,
                 "max_eval_samples": 32},
        "lora": {"r": 8, "alpha": None, "alpha_ratio": 2.0, "dropout": 0.05,
                 "target_modules": "attention", "bias": "none", "use_rslora": False,
                 "use_dora": False},
        "training": {"max_steps": 20, "per_device_train_batch_size": 8,
                     "per_device_eval_batch_size": 16, "gradient_accumulation_steps": 1,
                     "learning_rate": 3e-3, "eval_steps": 10, "logging_steps": 5,
                     "warmup_ratio": 0.0, "lr_scheduler_type": "linear", "weight_decay": 0.0,
                     "optim": "auto", "seed": 3, "max_grad_norm": 1.0,
                     "gradient_checkpointing": False},
        "target_groups": {"attention": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "threads": 2,
    }
    base["training"].update(training)
    base["data"].update(data or {})
    return TrialSpec(**base).for_trial({})


def test_trial_is_real_qlora_and_its_adapter_loads(tiny_model_dir, tmp_path):
    import bitsandbytes as bnb
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    s = tiny_spec()
    trainer = build_trainer(s, str(tmp_path / "probe"), save=False)
    layers = [m for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and layers[0].weight.quant_type == "nf4"
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)

    history = run_trial(s, output_dir=tmp_path / "out")
    assert [h["step"] for h in history] == [10, 20]
    for h in history:
        assert set(h) >= {"eval_loss", "eval_perplexity", "eval_mean_token_accuracy",
                          "train_loss", "learning_rate", "tokens_per_second", "step"}
    baseline = evaluate_baseline(s)
    assert history[-1]["eval_loss"] < baseline["eval_loss"] - 1.0

    ckpt = tmp_path / "out" / "checkpoint-20"
    names = {p.name for p in ckpt.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt",
            "rng_state.pth"} <= names
    assert "model.safetensors" not in names  # never the base weights
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, ckpt)
    lora_modules = [n for n, _ in model.named_modules() if n.endswith("lora_A.default")]
    assert len(lora_modules) == 4 * 4  # 4 layers x q/k/v/o
    ids = torch.tensor([[1, 50, 60, 70]])
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


def test_resume_from_a_checkpoint_continues_the_step_count(tmp_path):
    s = tiny_spec(max_steps=20)
    full = run_trial(s, output_dir=tmp_path / "full")
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-10", resumed_dir / "checkpoint-10")
    resumed = run_trial(s, output_dir=resumed_dir,
                        resume_from=str(resumed_dir / "checkpoint-10"))
    assert [h["step"] for h in resumed] == [20]
    assert resumed[-1]["eval_loss"] == pytest.approx(full[-1]["eval_loss"], rel=1e-3)

    # A trial's reported checkpoints as Ray stores them; the newest one is cut short.
    from ray import tune

    from trainables.checkpoints import CORRUPT_MARKER, checkpoint_problem, restore_usable

    trial = tmp_path / "trial"
    for i, step in enumerate((10, 20)):
        shutil.copytree(tmp_path / "full" / f"checkpoint-{step}", trial / f"checkpoint_00000{i}")
        assert checkpoint_problem(trial / f"checkpoint_00000{i}") is None
    weights = trial / "checkpoint_000001" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert "adapter_model.safetensors" in checkpoint_problem(trial / "checkpoint_000001")
    said = []
    restored = restore_usable(tune.Checkpoint(str(trial / "checkpoint_000001")),
                              lambda local: (local, (Path(local) / "trainer_state.json").read_text()),
                              warn=lambda text, **_: said.append(text))
    assert '"global_step": 10' in restored[1]
    assert "checkpoint_000001 cannot be read (adapter_model.safetensors" in said[0]
    assert "going on from checkpoint_000000" in said[1]
    assert (trial / CORRUPT_MARKER).read_text().startswith("checkpoint_000001: ")
    assert weights.is_file()  # nothing is deleted


def test_each_unreadable_checkpoint_file_is_named(tmp_path):
    from trainables.checkpoints import checkpoint_problem

    run_trial(tiny_spec(max_steps=5, eval_steps=5), output_dir=tmp_path / "run")
    for damage in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
                   "adapter_config.json"):
        ckpt = shutil.copytree(tmp_path / "run" / "checkpoint-5", tmp_path / damage)
        data = (ckpt / damage).read_bytes()
        half = len(data) // 2  # same size, second half zeroed: only a real read notices
        (ckpt / damage).write_bytes(data[:half] + bytes(len(data) - half))
        assert (checkpoint_problem(ckpt) or "").startswith(damage), damage


def test_nan_loss_raises_training_diverged(tmp_path):
    from trainables.callbacks import TrainingDiverged

    s = tiny_spec(learning_rate=1e8, max_grad_norm=0.0, max_steps=10, eval_steps=5)
    with pytest.raises(TrainingDiverged, match="training diverged"):
        run_trial(s, output_dir=tmp_path / "nan")


def assert_lengths_as_trl_tokenized(spec: TrialSpec, trainer) -> None:
    """Pre-flight's token counts (trainables/token_lengths.py) are those of the rows TRL's
    SFTTrainer built: prompt tokens (masked) and prompt + completion, row by row."""
    from trainables.data import load_splits
    from trainables.token_lengths import row_lengths

    train, evalset, _fmt = load_splits(spec.data, seed=int(spec.training["seed"]))
    for ours, theirs in ((train, trainer.train_dataset), (evalset, trainer.eval_dataset)):
        built = [(sum(label == -100 for label in labels), len(labels))
                 for labels in theirs["labels"]]
        assert row_lengths(ours, trainer.processing_class) == built


@pytest.mark.parametrize("fmt", ["messages", "instruction"])
def test_other_row_formats_train(tmp_path, fmt):
    import json

    rows = []
    for line in (EXAMPLES / "data/pricing_train.jsonl").read_text().splitlines()[:64]:
        r = json.loads(line)
        if fmt == "messages":
            rows.append({"messages": [{"role": "user", "content": r["prompt"].strip()},
                                      {"role": "assistant", "content": r["completion"]}]})
        else:
            rows.append({"instruction": "Estimate the price.", "input": r["prompt"].strip(),
                         "output": r["completion"]})
    path = tmp_path / f"{fmt}.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    s = tiny_spec({"train": {"path": str(path), "local": True}, "eval": None,
                   "eval_fraction": 0.25, "max_length": 128}, max_steps=10, eval_steps=5)
    trainer = build_trainer(s, str(tmp_path / "probe"), save=False)
    sample = trainer.train_dataset[0]
    # Completion-only loss: the prompt tokens are masked out of the loss.
    learned = sum(1 for label in sample["labels"] if label != -100)
    assert 0 < learned < len(sample["input_ids"])
    assert_lengths_as_trl_tokenized(s, trainer)
    history = run_trial(s, output_dir=tmp_path / "out")
    assert [h["step"] for h in history] == [5, 10]
    assert history[-1]["eval_loss"] < history[0]["eval_loss"]


def test_examples_too_long_for_max_length_are_a_clear_error(tmp_path):
    from trainables.data import DataError

    s = tiny_spec({"max_length": 8})  # shorter than any prompt: no completion token would remain
    with pytest.raises(DataError, match="data.max_length"):
        build_trainer(s, str(tmp_path / "probe"), save=False)


def test_packing_trains_padding_free_and_leaves_the_eval_data_as_it_is(tiny_model_dir, tmp_path):
    unpacked = tiny_spec({"max_length": 128}, max_steps=4, eval_steps=4)  # 2-3 examples a row
    plain = build_trainer(unpacked, str(tmp_path / "plain"), save=False)
    assert_lengths_as_trl_tokenized(unpacked, plain)
    s = tiny_spec({"max_length": 128, "packing": True}, max_steps=4, eval_steps=4)
    packed = build_trainer(s, str(tmp_path / "packed"), save=False)
    # Several examples share a max_length row; a batch is one flat sequence, no pad tokens,
    # with position ids that start again at each example (attention stays within it).
    assert len(packed.train_dataset) < len(plain.train_dataset)
    assert sum(map(len, packed.train_dataset["seq_lengths"])) == len(plain.train_dataset)
    batch = next(iter(packed.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    assert int((batch["position_ids"] == 0).sum()) > s.training["per_device_train_batch_size"]
    # The eval data is not packed: the same loss before training.
    assert packed.evaluate()["eval_loss"] == pytest.approx(plain.evaluate()["eval_loss"],
                                                           rel=1e-5)
    packed.train()
    assert packed.state.global_step == 4
