"""``qlora-sweep generate``: find an adapter (a local bundle or a Hub repo) and its base model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainables.generate import PROMPT_FORMAT

from ..config.schema import ModelSection, valid_repo_id
from ..errors import UserError
from .untrusted import check_adapter_weights, download_patterns
from ..sweepdir.names import PROMOTED, SWEEP_YAML


def locate_adapter(adapter: str, *, revision: str | None = None,
                   allow_pickle: bool = False) -> Path:
    """A folder with the adapter's files: the local path given (a sweep dir: its promoted
    bundle, else its winner's best checkpoint, as ``best.json`` names it), or a download from
    the Hub.

    An adapter whose weights are only a pickle (``adapter_model.bin``) is refused unless
    ``allow_pickle``; from the Hub, no pickle is downloaded unless ``allow_pickle``.

    Raises:
        UserError: neither a local adapter nor a Hub repo id, or the repo has no adapter.
    """
    local = Path(adapter).expanduser()
    if local.exists():
        if (local / SWEEP_YAML).is_file():  # a sweep dir: its bundle, else its winner
            if (local / PROMOTED).is_dir():
                local = local / PROMOTED
            else:
                from ..sweepdir.folder import open_sweep

                local = open_sweep(local).best_checkpoint()
        if not (local / "adapter_config.json").is_file():
            raise UserError(f"ADAPTER {adapter}: not an adapter (no adapter_config.json in it). "
                            f"Fix: give a sweep dir, a promoted bundle (SWEEP_DIR/promoted, "
                            f"written by `qlora-sweep promote`), a checkpoint folder, or a Hub "
                            f"repo id.")
        check_adapter_weights((f.name for f in local.iterdir()), str(local),
                              allow_pickle=allow_pickle)
        return local
    if not valid_repo_id(adapter):
        raise UserError(f"ADAPTER {adapter}: no such folder, and not a Hub repo id either. Fix: "
                        f"give a local adapter folder or 'owner/name'.")
    from huggingface_hub import HfApi, snapshot_download

    from .hub import hub_errors

    with hub_errors("downloading the adapter", adapter):
        files = HfApi().list_repo_files(adapter, revision=revision)
        check_adapter_weights(files, f"{adapter} ({revision or 'main'})",
                              allow_pickle=allow_pickle)
        path = Path(snapshot_download(adapter, revision=revision,
                                      **download_patterns(allow_pickle)))
    if not (path / "adapter_config.json").is_file():
        raise UserError(f"ADAPTER {adapter}: the Hub repo holds no adapter (no "
                        f"adapter_config.json at {revision or 'main'}).")
    return path


def adapter_base(adapter_dir: Path, base_model: str | None = None) -> tuple[dict[str, Any], dict]:
    """The base model settings to load the adapter on, and the prompt format it was trained with.

    A qlora-sweep bundle names both in ``sweep_summary.json``; any other PEFT adapter names
    its base model in ``adapter_config.json`` and is loaded in 4-bit, with plain prompts.
    """
    summary_path = adapter_dir / "sweep_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    recorded = summary.get("base_model") or {}
    name = base_model or recorded.get("name_or_path") or config.get("base_model_name_or_path")
    if not name:
        raise UserError(f"{adapter_dir}: the adapter does not name its base model. Fix: pass "
                        f"--base-model.")
    model = ModelSection(
        name_or_path=name,
        revision=None if name.startswith("builtin:") or base_model else recorded.get("revision"),
        quantization=recorded.get("quantization") or {},
        trust_remote_code=recorded.get("trust_remote_code", False),
    ).model_dump()
    data = summary.get("data") or {}
    fmt = {"data_format": data.get("format"), "prompt_suffix": data.get("prompt_suffix")}
    if fmt["data_format"] is None and (adapter_dir / PROMPT_FORMAT).is_file():
        fmt = json.loads((adapter_dir / PROMPT_FORMAT).read_text())  # a sweep's checkpoint
    return model, {"data_format": fmt.get("data_format") or "prompt_completion",
                   "prompt_suffix": fmt.get("prompt_suffix") or ""}


def read_prompts(prompts: list[str], path: str | None) -> list[str]:
    """The prompts given on the command line, then those of a JSONL file (a ``prompt`` per
    row, or a string per line).

    Raises:
        UserError: no prompt at all, or a file that cannot be read as such.
    """
    out = list(prompts)
    if path:
        file = Path(path).expanduser()
        if not file.is_file():
            raise UserError(f"--file {path}: no such file. Fix: give a JSONL file with one "
                            f'{{"prompt": ...}} per line.')
        for n, line in enumerate(file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"--file {path} line {n}: not JSON ({err.msg}). Fix: one "
                                f'{{"prompt": ...}} object per line.') from None
            prompt = row.get("prompt") if isinstance(row, dict) else row
            if not isinstance(prompt, str):
                raise UserError(f"--file {path} line {n}: no \"prompt\" string. Fix: one "
                                f'{{"prompt": ...}} object per line.')
            out.append(prompt)
    if not out:
        raise UserError("generate: no prompt. Fix: give one or more prompts after the adapter, "
                        "or --file prompts.jsonl.")
    return out


def run_generate(adapter: str, prompts: list[str], *, revision: str | None,
                 base_model: str | None, max_new_tokens: int,
                 allow_pickle: bool = False) -> list[str]:
    """The adapter's answer to each prompt, in the prompt format it was trained with; the model
    is loaded once."""
    from trainables.generate import generate

    adapter_dir = locate_adapter(adapter, revision=revision, allow_pickle=allow_pickle)
    model, fmt = adapter_base(adapter_dir, base_model)
    try:
        return generate(model, adapter_dir, prompts, max_new_tokens=max_new_tokens, **fmt)
    except OSError as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"the base model {model['name_or_path']} of {adapter} could not be "
                        f"loaded ({first}). Fix: pass --base-model with a Hub id or local folder "
                        f"of the same model.") from None
    except ValueError as err:
        raise UserError(f"ADAPTER {adapter}: {err}.") from None
    except RuntimeError as err:  # torch's load_state_dict: the adapter is for another model
        mismatch = _first_size_mismatch(str(err))
        if mismatch is None:
            raise
        trained_on = _trained_on(adapter_dir)
        raise UserError(
            f"--base-model {model['name_or_path']}: the adapter does not fit this model "
            f"({mismatch}); it was trained on {trained_on}. Fix: pass --base-model with "
            f"{trained_on} (or a local copy of it), or leave --base-model out.") from None


def _first_size_mismatch(message: str) -> str | None:
    """``layer X: the adapter has shape A, the model B`` from torch's size-mismatch error."""
    import re

    found = re.search(r"size mismatch for (\S+?): copying a param with shape torch\.Size\((\[[^]]*\])"
                      r"\) from checkpoint, the shape in current model is torch\.Size\((\[[^]]*\])",
                      message)
    if not found:
        return None
    name, theirs, ours = found.groups()
    name = name.removeprefix("base_model.model.").replace(".default.weight", "")
    return f"{name}: the adapter has shape {theirs}, the model {ours}"


def _trained_on(adapter_dir: Path) -> str:
    """The base model an adapter was trained on: a sweep checkpoint's sweep.yaml names it as
    the user wrote it (``builtin:tiny-llama``), anything else as :func:`adapter_base` reads it."""
    for folder in adapter_dir.resolve().parents[:3]:  # a checkpoint: SWEEP/trial_x/checkpoint_n
        if (folder / SWEEP_YAML).is_file():
            import yaml

            name = (yaml.safe_load((folder / SWEEP_YAML).read_text()).get("model") or {}).get(
                "name_or_path")
            if name:
                return name
    try:
        return adapter_base(adapter_dir)[0]["name_or_path"]
    except UserError:  # it names none
        return "the model it names"
