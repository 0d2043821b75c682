"""The loaded, quantized base model, kept by the worker process from one trial to the next.

With Ray Tune's actor reuse (``resources.warm_start``) one worker process runs trial after
trial. Loading and quantizing the base model is the costliest part of a trial's start, so the
process keeps it: the next trial with the same ``model`` settings takes it back without the
previous trial's adapter (PEFT's ``unload`` puts the original layers back), attaches its own,
and its Trainer builds a new optimizer, scheduler and RNG state from the trial's seed.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from typing import Any

_kept: dict[str, Any] = {"key": None, "base": None, "adapter": None}
loads = 0  # how many times this process loaded a base model (tests and benchmarks read it)


def _key(model: dict[str, Any]) -> str:
    return json.dumps(model, sort_keys=True, default=str)


def base_model(model: dict[str, Any], load: Callable[[dict[str, Any]], Any], *,
               keep: bool = True) -> tuple[Any, bool]:
    """``(base model, warm)``: the kept one, freed of the previous adapter, when it was loaded
    with the same settings; else ``load(model)`` (kept when ``keep``)."""
    global loads
    if keep and _kept["key"] == _key(model):
        return _detach(), True
    forget()
    base = load(model)
    loads += 1
    if keep:
        _kept.update(key=_key(model), base=base)
    return base, False


def holds(adapter_model) -> None:
    """The PEFT model the current trial wraps the kept base in; the next trial unloads it."""
    if _kept["base"] is not None:
        _kept["adapter"] = adapter_model


def _detach():
    adapter, base = _kept["adapter"], _kept["base"]
    _kept["adapter"] = None
    if adapter is not None:
        # The LoRA layers replaced by the original ones, in place (peft_config goes too).
        base = _kept["base"] = adapter.unload()
    if getattr(base, "is_gradient_checkpointing", False):
        base.gradient_checkpointing_disable()  # the trial's own Trainer turns it on if asked
    _free()
    return base


def forget() -> None:
    """Drop the kept model (another base model is wanted, or the process is done)."""
    _kept.update(key=None, base=None, adapter=None)
    _free()


def _free() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
