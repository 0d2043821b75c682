"""Base model loading (bitsandbytes 4-bit/8-bit or none) and LoRA attachment (PEFT)."""

from __future__ import annotations

from typing import Any

from . import tiny_llama


def quiet_transformers() -> None:
    """No progress bars or advisory warnings from inside trials."""
    import transformers

    import warnings

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # Deprecation notices about argument names we do not choose are noise to our users.
    warnings.filterwarnings("ignore", category=FutureWarning)


def compute_dtype(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, name)


def quantization_config(quant: dict[str, Any]):
    """The ``BitsAndBytesConfig`` for the model settings, or None for an unquantized model."""
    from transformers import BitsAndBytesConfig

    if quant["mode"] == "none":
        return None
    if quant["mode"] == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant["quant_type"],
        bnb_4bit_use_double_quant=quant["double_quant"],
        bnb_4bit_compute_dtype=compute_dtype(quant["compute_dtype"]),
    )


def model_path(model: dict[str, Any]) -> str:
    """What ``from_pretrained`` gets: the builtin model's cache folder, or the name/path as is."""
    return tiny_llama.resolve(model["name_or_path"])


def load_tokenizer(model: dict[str, Any]):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path(model), revision=model.get("revision"),
                                        trust_remote_code=model.get("trust_remote_code", False))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_base_model(model: dict[str, Any], *, for_training: bool = True):
    """Load the base causal LM as configured (ready for k-bit training unless told not to)."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    quant = model["quantization"]
    dtype = compute_dtype(quant["compute_dtype"])
    kwargs: dict[str, Any] = {}
    if torch.cuda.is_available():
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    base = AutoModelForCausalLM.from_pretrained(
        model_path(model),
        revision=model.get("revision"),
        trust_remote_code=model.get("trust_remote_code", False),
        quantization_config=quantization_config(quant),
        dtype=dtype,
        **kwargs,
    )
    if quant["mode"] != "none" and for_training:
        # Casts norms to fp32 and enables input grads; gradient checkpointing is our own switch.
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    _keep_cpu_weights_as_loaded(base)
    return base


def _keep_cpu_weights_as_loaded(base) -> None:
    """Turn off bitsandbytes' CPU inference layout for 4-bit layers.

    On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit weight for a faster kernel at its
    first no-grad forward in eval mode (an evaluation) and packs it back when the model is
    saved (a checkpoint), re-quantizing the double-quantized scales on the way: the frozen
    base weights would drift at every evaluation and checkpoint, differ between a trial and
    the one after it in a reused worker, and differ between CPUs. Every forward then uses
    the layout the model was quantized in.
    """
    import bitsandbytes as bnb

    for module in base.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def lora_config(lora: dict[str, Any], target_modules: list[str]):
    from peft import LoraConfig

    from .lora import lora_alpha

    return LoraConfig(
        r=int(lora["r"]),
        lora_alpha=lora_alpha(lora),
        lora_dropout=float(lora["dropout"]),
        target_modules=list(target_modules),
        bias=lora["bias"],
        use_rslora=bool(lora["use_rslora"]),
        use_dora=bool(lora["use_dora"]),
        task_type="CAUSAL_LM",
    )


def attach_lora(base, lora: dict[str, Any], target_modules: list[str]):
    """Wrap the base model with a fresh LoRA adapter (B = 0, so outputs start unchanged)."""
    from peft import get_peft_model

    return get_peft_model(base, lora_config(lora, target_modules))


def model_config(model: dict[str, Any]):
    """The model's configuration (its ``config.json``), without weights: the builtin model's
    recipe, a local folder's, or a Hub model's."""
    from transformers import AutoConfig

    if tiny_llama.is_builtin(model["name_or_path"]):
        return tiny_llama.llama_config()
    return AutoConfig.from_pretrained(model["name_or_path"], revision=model.get("revision"),
                                      trust_remote_code=model.get("trust_remote_code", False))


def meta_model(model: dict[str, Any]):
    """The model built from its config on the meta device: its layers, no weights."""
    import torch
    from transformers import AutoModelForCausalLM

    config = model_config(model)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(
            config, trust_remote_code=model.get("trust_remote_code", False))


def linear_module_names(model: dict[str, Any]) -> list[str]:
    """Names of the model's linear layers, from its config alone (built on the meta device).

    This is how target-module groups are resolved before any trial, without loading weights.
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    return [name for name, mod in meta_model(model).named_modules()
            if isinstance(mod, (torch.nn.Linear, Conv1D))]
