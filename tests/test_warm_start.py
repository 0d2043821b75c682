"""Warm trials and data tokenized once, on the trainable alone (no Tuner): real 4-bit QLoRA.

A process that keeps its quantized base model between trials (``trainables/warm.py``, what a
reused Ray worker does) must train a trial exactly as a fresh process would, whatever trial
ran before it, without holding more memory trial after trial; and a trial given the sweep's
tokenized data must train exactly as one that tokenizes the data itself.
"""

from __future__ import annotations

import gc

import pytest
import torch

from trainables import warm
from trainables.trial import evaluate_baseline, run_trial

from .test_trainable import tiny_spec


def _live_tensor_bytes() -> int:
    gc.collect()
    seen, total = set(), 0
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and not obj.is_meta:
            storage = obj.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


def _curve(history: list[dict]) -> list[tuple]:
    return [(h["step"], h["eval_loss"], h["train_loss"]) for h in history]


def test_a_warm_trial_trains_exactly_like_a_cold_one(tiny_model_dir, tmp_path):
    a = tiny_spec(max_steps=6, eval_steps=3, logging_steps=3).replace(warm_start=True)
    other = a.for_trial({"lora.r": 4, "lora.target_modules": ["q_proj", "v_proj"],
                         "lora.use_dora": True, "training.gradient_checkpointing": True,
                         "training.learning_rate": 1e-2})
    warm.forget()
    loads = warm.loads
    cold = run_trial(a, output_dir=tmp_path / "cold")
    assert warm.loads == loads + 1 and cold[0]["warm_start"] == 0
    sizes = []
    for i, s in enumerate([other, a, other, a]):  # each one after a different trial
        history = run_trial(s, output_dir=tmp_path / f"warm{i}")
        assert history[0]["warm_start"] == 1
        if s is a:
            assert _curve(history) == _curve(cold)  # to the last bit
        sizes.append(_live_tensor_bytes())
    assert warm.loads == loads + 1  # loaded and quantized once for five trials
    # Nothing accumulates from trial to trial (the CPU stand-in for GPU memory).
    assert sizes[2] <= sizes[0] and sizes[3] <= sizes[1], sizes
    warm.forget()


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """One 6-step trial that tokenizes its own data: ``(spec, output dir, history)``; its
    checkpoints are at steps 3 and 6."""
    s = tiny_spec(max_steps=6, eval_steps=3, logging_steps=3)
    out = tmp_path_factory.mktemp("itself")
    return s, out, run_trial(s, output_dir=out)


def test_a_trial_on_the_sweeps_tokenized_data_trains_like_one_that_tokenizes(trained, tmp_path):
    s, _, itself = trained
    baseline = evaluate_baseline(s)
    prepared = baseline["prepared_data"]
    assert set(prepared) == {"train", "eval", "seed"} and "input_ids" in prepared["train"].column_names
    assert prepared["eval"].num_rows == baseline["eval_samples"]
    assert prepared["seed"] == s.training["seed"]
    shared = run_trial(s.replace(prepared_data=prepared), output_dir=tmp_path / "shared")
    assert itself[0]["data_tokenized"] == 1 and shared[0]["data_tokenized"] == 0
    assert _curve(shared) == _curve(itself)
    # A trial with another seed (another train/eval split) tokenizes its own data.
    other = tiny_spec(max_steps=3, eval_steps=3, logging_steps=3, seed=s.training["seed"] + 1)
    assert run_trial(other.replace(prepared_data=prepared),
                     output_dir=tmp_path / "other")[0]["data_tokenized"] == 1


def _quantized(model) -> dict[str, torch.Tensor]:
    import bitsandbytes as bnb

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            name = name.replace("base_model.model.", "").replace(".base_layer", "")
            out[f"{name}.weight"] = module.weight.data.clone()
            out[f"{name}.absmax"] = module.weight.quant_state.absmax.clone()
    return out


def test_evaluations_and_checkpoints_leave_the_quantized_base_as_loaded(tiny_model_dir, tmp_path):
    """bitsandbytes repacks 4-bit weights for its CPU inference kernel on AVX512-BF16 CPUs and
    re-quantizes them on saving; the trainable keeps them as loaded (trainables/model.py)."""
    from trainables.model import load_base_model

    s = tiny_spec(max_steps=6, eval_steps=3, logging_steps=3).replace(warm_start=True)
    warm.forget()
    run_trial(s, output_dir=tmp_path / "trial")  # evaluates and checkpoints twice
    kept = _quantized(warm._detach())
    fresh = _quantized(load_base_model(s.model))
    assert kept.keys() == fresh.keys() and len(kept) == 2 * 28  # 4 layers x 7 linear
    assert all(torch.equal(kept[k], fresh[k]) for k in fresh)
    warm.forget()


def test_adapters_judged_together_load_the_base_once_and_score_as_alone(trained):
    """A promotion evaluates the champion and the challenger on one loaded base model; each
    scores exactly what it scores evaluated alone, on a fresh one."""
    from trainables.trial import evaluate_adapters

    s, out, _ = trained
    first, last = out / "checkpoint-3", out / "checkpoint-6"
    warm.forget()
    loads = warm.loads
    together = evaluate_adapters(s, [first, last])
    assert warm.loads == loads + 1
    alone = evaluate_adapters(s, [last])
    assert warm.loads == loads + 2  # not kept after the call
    measured = ("eval_loss", "eval_perplexity", "eval_mean_token_accuracy", "eval_samples")
    assert [together[1][k] for k in measured] == [alone[0][k] for k in measured]
    assert together[0]["eval_loss"] != together[1]["eval_loss"]


def test_a_reused_worker_reports_each_trials_own_peak_memory(tiny_model_dir, tmp_path):
    """``peak_memory_mb`` is the trial's peak: a worker that earlier held far more (a larger
    trial before this one; here a 1 GB array, freed again) does not report that."""
    import numpy as np

    from trainables.callbacks import peak_memory_mb

    s = tiny_spec(max_steps=3, eval_steps=3, logging_steps=3).replace(warm_start=True)
    spike = np.ones(2**30 // 8)  # touched: resident
    earlier = peak_memory_mb()
    del spike
    history = run_trial(s, output_dir=tmp_path / "trial")
    assert history[0]["peak_memory_mb"] < earlier - 200, (history[0]["peak_memory_mb"], earlier)
    warm.forget()
