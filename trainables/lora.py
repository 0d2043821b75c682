"""LoRA settings computed in one place (torch-free, so the driver uses them too)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def lora_alpha(lora: Mapping[str, Any]) -> float:
    """LoRA's alpha: ``lora.alpha`` when given, else ``lora.alpha_ratio`` × ``lora.r`` (the
    config rules forbid a fixed alpha beside a searched ratio)."""
    if lora.get("alpha") is not None:
        return float(lora["alpha"])
    return float(lora["alpha_ratio"]) * int(lora["r"])
