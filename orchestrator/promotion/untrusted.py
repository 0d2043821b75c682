"""Reading adapters someone else wrote (a Hub repo, a shared folder) without running their code.

A pickle (``adapter_model.bin``, ``*.pt``, ``*.pkl``) can execute code when it is loaded;
safetensors, JSON and tokenizer files cannot. qlora-sweep reads an adapter it did not write as
safetensors only, and refuses a pickle-only adapter unless the user says they trust it
(``--allow-pickle``); even then PEFT loads it with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import UserError

PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt")
ADAPTER_PATTERNS = ("adapter_config.json", "adapter_model.safetensors", "*.json", "tokenizer*",
                    "*.jinja", "*.model", "*.txt")
SAFE_WEIGHTS = "adapter_model.safetensors"
PICKLED_WEIGHTS = "adapter_model.bin"


def download_patterns(allow_pickle: bool) -> dict[str, list[str]]:
    """``allow_patterns`` / ``ignore_patterns`` for ``snapshot_download`` of an adapter."""
    if allow_pickle:
        return {"allow_patterns": [*ADAPTER_PATTERNS, PICKLED_WEIGHTS],
                "ignore_patterns": [p for p in PICKLE_PATTERNS if p != "*.bin"]}
    return {"allow_patterns": list(ADAPTER_PATTERNS), "ignore_patterns": list(PICKLE_PATTERNS)}


def check_adapter_weights(files: Iterable[str], where: str, *, allow_pickle: bool) -> None:
    """Refuse an adapter whose weights exist only as a pickle, unless ``allow_pickle``.

    Raises:
        UserError: ``adapter_model.bin`` without ``adapter_model.safetensors``.
    """
    names = {name.rsplit("/", 1)[-1] for name in files}
    if SAFE_WEIGHTS in names or PICKLED_WEIGHTS not in names or allow_pickle:
        return
    raise UserError(
        f"the adapter in {where} is stored only as {PICKLED_WEIGHTS}, a pickle, and loading a "
        f"pickle can run code that its author put in it; qlora-sweep reads adapters it did not "
        f"write as {SAFE_WEIGHTS} only. Fix: re-save the adapter as safetensors "
        f"(`model.save_pretrained(folder)` writes it by default), or, if you trust whoever "
        f"wrote it, pass --allow-pickle (PEFT then loads it with torch.load(weights_only=True)).")
