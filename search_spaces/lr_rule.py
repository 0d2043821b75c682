"""A calibrated LoRA learning rate for a model's family and size: the centre of ``search_space:
auto``'s learning-rate range.

The rule is Thinking Machines' (John Schulman et al., "LoRA Without Regret", 2025), as the Tinker
cookbook's ``hyperparam_utils.get_lr`` wrote it (before it became a table of swept values)::

    lr = 5e-5 * 10 * (2000 / hidden_size) ** p

5e-5 is a full fine-tuning learning rate at hidden size 2000; LoRA's best learning rate is about
10 times full fine-tuning's ("the factor of 10 was more accurate empirically"); ``p`` is fitted
per family: 0.781 for Llama, 0.0775 for Qwen. For Llama-3.1-8B (hidden 4096) it gives 2.9e-4,
beside the 3e-4 their sweeps found best for every rank from 4 to 128; for Llama-3.2-1B (2048)
4.9e-4, where their later table says 1e-3 — so the search range around the centre spans 16x.

Which model types count as which family (``model_type`` of the model's ``config.json``):

- ``llama``: the Llama rule, calibrated.
- ``qwen2``, ``qwen3`` (and their MoE variants): the Qwen rule, calibrated (on Qwen3; Qwen2 is
  the same architecture).
- ``mistral``, ``mixtral``: the Llama rule *by architecture* (a Llama decoder with the same
  layers and module names), not calibrated on them.
- anything else (GPT-NeoX, Phi, Gemma, GPT-2, ...): no calibrated rule; the Llama exponent as
  the fallback, said so wherever the centre is shown.

Pure functions: no torch, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

FULL_FT_LR = 5e-5  # full fine-tuning's learning rate at REFERENCE_HIDDEN
LORA_FACTOR = 10.0  # LoRA's best learning rate over full fine-tuning's
REFERENCE_HIDDEN = 2000
EXPONENTS = {"llama": 0.781, "qwen": 0.0775}
SOURCE = "LoRA Without Regret"

# model_type -> (family, how it was decided)
_CALIBRATED = {"llama": "llama", "qwen2": "qwen", "qwen2_moe": "qwen", "qwen3": "qwen",
               "qwen3_moe": "qwen"}
_LLAMA_ARCHITECTURE = {"mistral", "mixtral"}
FALLBACK = "llama"


@dataclass(frozen=True)
class LrCentre:
    """A calibrated LoRA learning rate and how it was reached."""

    lr: float
    family: str  # whose exponent: llama or qwen
    exponent: float
    hidden_size: int
    model_type: str
    basis: str  # calibrated | architecture | fallback

    def formula(self) -> str:
        """``5e-5*10*(2000/192)^0.781``"""
        full = f"{FULL_FT_LR:g}".replace("e-0", "e-")
        return f"{full}*{LORA_FACTOR:g}*({REFERENCE_HIDDEN}/{self.hidden_size})^{self.exponent:g}"

    def rule(self) -> str:
        """Which rule, and on what grounds: ``llama rule, LoRA Without Regret``."""
        if self.basis == "calibrated":
            return f"{self.family} rule, {SOURCE}"
        if self.basis == "architecture":
            return f"{self.family} rule for {self.model_type}, a Llama architecture, {SOURCE}"
        return (f"no calibrated rule for {self.model_type or 'this model'}: the "
                f"{self.family} exponent as fallback, {SOURCE}")


def family(model_type: str) -> tuple[str, str]:
    """``(family, basis)`` for a ``model_type``: basis is ``calibrated``, ``architecture``
    (a Llama by its layers, not calibrated on it) or ``fallback``."""
    kind = (model_type or "").lower()
    if kind in _CALIBRATED:
        return _CALIBRATED[kind], "calibrated"
    if kind in _LLAMA_ARCHITECTURE:
        return "llama", "architecture"
    return FALLBACK, "fallback"


def lora_lr(hidden_size: int, family_name: str) -> float:
    """``5e-5 * 10 * (2000 / hidden_size) ** EXPONENTS[family_name]``.

    Raises:
        ValueError: hidden_size is not positive, or the family has no exponent.
    """
    if hidden_size <= 0:
        raise ValueError(f"hidden_size must be positive, got {hidden_size}")
    if family_name not in EXPONENTS:
        raise ValueError(f"no exponent for family {family_name!r}; known: "
                         f"{', '.join(EXPONENTS)}")
    return FULL_FT_LR * LORA_FACTOR * (REFERENCE_HIDDEN / hidden_size) ** EXPONENTS[family_name]


def hidden_size_of(config: dict) -> int | None:
    """The model's width from its ``config.json`` dict: ``hidden_size`` (GPT-2: ``n_embd``,
    others ``d_model``), or the same inside ``text_config`` (multimodal models)."""
    for source in (config, config.get("text_config") or {}):
        for key in ("hidden_size", "n_embd", "d_model"):
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def lr_centre(config: dict) -> LrCentre:
    """The calibrated LoRA learning rate for a model, from its ``config.json`` dict.

    Raises:
        ValueError: the config names no hidden size.
    """
    hidden = hidden_size_of(config)
    if hidden is None:
        raise ValueError("its config names no hidden size (hidden_size, n_embd or d_model)")
    model_type = str(config.get("model_type") or (config.get("text_config") or {})
                     .get("model_type") or "")
    name, basis = family(model_type)
    return LrCentre(lr=lora_lr(hidden, name), family=name, exponent=EXPONENTS[name],
                    hidden_size=hidden, model_type=model_type, basis=basis)
