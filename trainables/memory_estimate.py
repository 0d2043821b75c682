"""How much memory one QLoRA trial needs, from the model's config and the trial's settings.

No weights are loaded: the model is built on the meta device to read its layers' shapes. The
estimate is the peak of a training step (or of an evaluation batch, if larger):

* **base**: the quantized linear layers (NF4/FP4: 4 bits a weight plus the block constants;
  8-bit: a byte and a scale per row) and the layers bitsandbytes leaves unquantized
  (embeddings, ``lm_head``, norms), which PEFT's k-bit preparation casts to float32;
* **adapter**: the LoRA (and DoRA) weights in float32, their gradients and the optimizer's
  state;
* **activations**: what a decoder layer keeps for the backward pass, per token of the batch
  (every layer, or one layer plus each layer's input with gradient checkpointing);
* **logits**: TRL's fused LM head computes the loss in tiles of tokens x vocabulary and never
  holds all the logits; a tile, its float32 working copy and its gradient;
* on a CPU, a fixed allowance for the training loop's own allocations.

``benchmarks/memory_estimate.py`` checks it against measured peak memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .spec import TrialSpec

GiB = 2**30
# Beyond what torch allocates: a CUDA context with cuBLAS workspaces, and the caching
# allocator's fragmentation (a share of the estimate).
CUDA_CONTEXT_BYTES = int(0.6 * GiB)
FRAGMENTATION = 0.10
# On a CPU, what the training loop allocates beyond the tensors counted here (the process's
# resident memory grows by this much more than the tensors account for: about 0.1-0.2 GiB in
# benchmarks/memory_estimate.py, whatever the model size).
CPU_RUNTIME_BYTES = 160 * 2**20
# TRL's SFTTrainer computes the loss with a fused LM head that never holds the whole
# [tokens, vocab] logits: it works through tiles of this many tokens x vocabulary entries
# (trl/kernels/chunked_logprob.py), in training and evaluation alike.
LOGIT_TILE = (4096, 32768)
# Bytes of optimizer state per trainable parameter.
OPTIMIZER_STATE_BYTES = {"adamw_torch": 8, "adamw_torch_fused": 8, "paged_adamw_32bit": 8,
                         "paged_adamw_8bit": 2, "adamw_bnb_8bit": 2, "adafactor": 1, "sgd": 0}


@dataclass
class Shape:
    """What the estimate needs to know of a model."""

    linears: dict[str, tuple[int, int]]  # module name -> (in_features, out_features)
    other_params: int  # parameters outside the linear layers (embeddings, norms)
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    lm_head: str | None = None  # the output layer's module name, never quantized
    tied: bool = False  # lm_head shares the input embedding's weights


@dataclass
class Estimate:
    """Bytes, by part. ``total`` is the peak of a training step or an eval batch."""

    base: int
    adapter: int
    activations: int
    logits: int
    eval_peak: int  # the same for an evaluation batch (no gradients kept)
    runtime: int = 0  # on a CPU: the training loop's own allocations

    @property
    def train_peak(self) -> int:
        return self.base + self.adapter + self.activations + self.logits + self.runtime

    @property
    def total(self) -> int:
        return max(self.train_peak, self.eval_peak)

    def describe(self) -> str:
        gb = lambda b: f"{b / GiB:.2f}"  # noqa: E731
        return (f"{gb(self.total)} GiB (base {gb(self.base)}, adapter+optimizer "
                f"{gb(self.adapter)}, activations {gb(self.activations)}, logits "
                f"{gb(self.logits)}; eval {gb(self.eval_peak)})")


def model_shape(model: dict[str, Any]) -> Shape:
    """The model's layer shapes, from its config alone (built on the meta device)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    from .model import meta_model

    skeleton = meta_model(model)
    config = skeleton.config
    text = getattr(config, "get_text_config", lambda: config)()
    linears: dict[str, tuple[int, int]] = {}
    linear_params = 0
    for name, mod in skeleton.named_modules():
        if isinstance(mod, torch.nn.Linear):
            linears[name] = (mod.in_features, mod.out_features)
        elif isinstance(mod, Conv1D):
            linears[name] = tuple(mod.weight.shape)
        else:
            continue
        linear_params += mod.weight.numel()
    total = sum(p.numel() for p in skeleton.parameters())  # tied weights counted once
    out = skeleton.get_output_embeddings()
    lm_head = next((n for n, m in skeleton.named_modules() if m is out), None)
    tied = out is not None and out.weight is skeleton.get_input_embeddings().weight
    if tied and lm_head is not None:
        linear_params -= out.weight.numel()  # counted with the embeddings
    hidden = int(getattr(text, "hidden_size", 0) or getattr(text, "n_embd", 0))
    heads = int(getattr(text, "num_attention_heads", 0) or getattr(text, "n_head", 1))
    return Shape(
        linears=linears,
        other_params=total - linear_params,
        hidden=hidden,
        intermediate=int(getattr(text, "intermediate_size", 0) or 4 * hidden),
        layers=int(getattr(text, "num_hidden_layers", 0) or getattr(text, "n_layer", 1)),
        heads=heads,
        kv_heads=int(getattr(text, "num_key_value_heads", 0) or heads),
        vocab=int(getattr(text, "vocab_size", 0)),
        lm_head=lm_head,
        tied=tied,
    )


def _quantized_bytes(params: int, quant: dict[str, Any], rows: int, dtype_bytes: int) -> float:
    if quant["mode"] == "4bit":
        # a 4-bit code per weight; a block of 64 shares an absmax (fp32, or 8-bit with a second
        # fp32 constant per 256 blocks when double-quantized)
        constants = (1 + 4 / 256) / 64 if quant["double_quant"] else 4 / 64
        return params * (0.5 + constants)
    if quant["mode"] == "8bit":
        return params + 4 * rows
    return params * dtype_bytes


def estimate(shape: Shape, spec: TrialSpec, *, on_gpu: bool) -> Estimate:
    """The memory one trial needs (a trial's spec, ``TrialSpec.for_trial``: its ``lora``
    has ``resolved_target_modules``)."""
    quant = spec.model["quantization"]
    lora, training = spec.lora, spec.training
    wide = on_gpu and quant.get("compute_dtype", "auto") in ("auto", "bfloat16", "float16")
    d = 2 if wide else 4  # bytes of an activation: bf16/fp16 on a GPU, float32 on a CPU
    quantized = quant["mode"] != "none"
    # k-bit preparation casts the unquantized weights to float32
    other_bytes = 4 if quantized else d

    targets = tuple(lora["resolved_target_modules"])
    base = shape.other_params * other_bytes
    lora_params = 0
    lora_inputs = 0  # LoRA dropout keeps a copy of each targeted layer's input
    r = int(lora["r"])
    for name, (fan_in, fan_out) in shape.linears.items():
        is_head = name == shape.lm_head
        if not (is_head and shape.tied):
            params = fan_in * fan_out
            base += (params * other_bytes if is_head
                     else _quantized_bytes(params, quant, fan_out, d))
        if name.endswith(targets) and not is_head:
            lora_params += r * (fan_in + fan_out) + (fan_out if lora.get("use_dora") else 0)
            lora_inputs += fan_in if lora.get("dropout", 0) > 0 else 0
    state = OPTIMIZER_STATE_BYTES.get(training.get("optim", "auto"), 8)
    adapter = lora_params * (4 + 4 + state)  # fp32 weights, gradients, optimizer state

    tokens = int(training["per_device_train_batch_size"]) * int(spec.data["max_length"])
    h, i = shape.hidden, shape.intermediate
    kv = h * shape.kv_heads // max(1, shape.heads)
    # One decoder layer, per token: the two RMSNorms keep float32 copies (2 x 4 bytes) and
    # their output; attention keeps q, k, v, rotated q and k, its output and o_proj's input;
    # the MLP keeps gate, up, act(gate) and their product; LoRA dropout a copy of each
    # targeted input (and a 1-byte mask).
    per_layer = (2 * (8 + d) * h + d * (4 * h + 3 * kv) + 4 * d * i
                 + (d + 1) * lora_inputs // max(1, shape.layers))
    if training.get("gradient_checkpointing"):
        activations = tokens * (shape.layers * h * d + per_layer)
    else:
        activations = tokens * shape.layers * per_layer
    def logit_tile(n_tokens: int) -> int:
        # a tile of logits in the compute dtype, its float32 working copy and gradient
        return (min(n_tokens, LOGIT_TILE[0]) * min(shape.vocab, LOGIT_TILE[1]) * (d + 4 + 4))

    logits = logit_tile(tokens)
    eval_tokens = int(training.get("per_device_eval_batch_size", 16)) * int(
        spec.data["max_length"])
    # evaluation keeps no activations: a layer's worth in flight, and a logits tile
    eval_peak = base + lora_params * 4 + eval_tokens * 2 * per_layer + logit_tile(eval_tokens)
    runtime = 0 if on_gpu else CPU_RUNTIME_BYTES
    return Estimate(base=int(base), adapter=int(adapter), activations=int(activations),
                    logits=int(logits), eval_peak=int(eval_peak + runtime), runtime=runtime)


def trials_per_gpu(need: int, gpu_bytes: int) -> int:
    """How many trials of ``need`` bytes (the estimate) share a GPU of ``gpu_bytes``; 0 when
    not even one fits."""
    per_trial = need * (1 + FRAGMENTATION) + CUDA_CONTEXT_BYTES
    return int(gpu_bytes // per_trial)
