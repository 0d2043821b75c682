"""Which reported checkpoint a restarted trial goes on from.

A trial restarts (``failure.max_retries``, ``qlora-sweep resume``) from the newest checkpoint
Ray gives it. When that one cannot be read (a truncated file after a disk or network fault)
the trial falls back to the newest readable one before it, with a warning, and the unreadable
ones are named in ``corrupt_checkpoints.txt`` next to them so that no winner is picked from
them. The files themselves are left where they are.
"""

from __future__ import annotations

import json
import posixpath
import zipfile
from pathlib import Path

from .storage import read_file, write_file

CORRUPT_MARKER = "corrupt_checkpoints.txt"

# What the Trainer needs to go on exactly where it stopped (adapter-only checkpoints).
_JSON = ("trainer_state.json", "adapter_config.json")
_TORCH_ZIPS = ("optimizer.pt", "scheduler.pt", "rng_state.pth")


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the checkpoint folder at ``path`` cannot be resumed from, or ``None`` if it can.

    Every file is read whole: JSON parsed, safetensors loaded, torch's zip archives checked
    against their CRCs (nothing is unpickled)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    for name in _JSON:
        try:
            state = json.loads((path / name).read_text())
        except (OSError, ValueError) as err:
            return f"{name}: {type(err).__name__}: {err}"
        if name == "trainer_state.json" and not isinstance(state.get("global_step"), int):
            return f"{name}: no global_step"
    try:
        load_file(path / "adapter_model.safetensors")
    except (OSError, SafetensorError, ValueError, RuntimeError) as err:
        return f"adapter_model.safetensors: {err}"
    for name in _TORCH_ZIPS:
        try:
            with zipfile.ZipFile(path / name) as archive:
                bad = archive.testzip()
        except (OSError, zipfile.BadZipFile) as err:
            return f"{name}: {err}"
        if bad is not None:
            return f"{name}: {bad} fails its CRC check"
    return None


def _read_marker(fs, trial_path: str) -> str:
    try:
        return read_file(fs, posixpath.join(trial_path, CORRUPT_MARKER)) or ""
    except OSError:
        return ""


def corrupt_names(fs, trial_path: str) -> set[str]:
    """The checkpoint folder names listed in the trial's ``corrupt_checkpoints.txt``."""
    return {line.split(":", 1)[0] for line in _read_marker(fs, trial_path).splitlines()
            if line.strip()}


def _mark_corrupt(fs, trial_path: str, name: str, reason: str) -> None:
    before = _read_marker(fs, trial_path)
    write_file(fs, posixpath.join(trial_path, CORRUPT_MARKER), before + f"{name}: {reason}\n")


def candidates(checkpoint) -> list:
    """``checkpoint`` (Ray's newest) then the trial's older reported checkpoints, newest first,
    leaving out those already found corrupt."""
    from pyarrow.fs import FileSelector, FileType
    from ray import tune

    fs = checkpoint.filesystem
    trial_path = posixpath.dirname(checkpoint.path.rstrip("/"))
    newest = posixpath.basename(checkpoint.path.rstrip("/"))
    skip = corrupt_names(fs, trial_path) | {newest}
    older = sorted((i.base_name for i in fs.get_file_info(FileSelector(trial_path))
                    if i.type == FileType.Directory and i.base_name.startswith("checkpoint_")
                    and i.base_name not in skip and i.base_name < newest), reverse=True)
    return [checkpoint] + [tune.Checkpoint(posixpath.join(trial_path, name), filesystem=fs)
                           for name in older]


def restore_usable(checkpoint, restore, *, warn=print):
    """``restore(local_dir)`` on the newest readable checkpoint from ``candidates``; returns
    what it returns, or ``None`` (start from step 0) when none is readable."""
    for ckpt in candidates(checkpoint):
        with ckpt.as_directory() as local:
            problem = checkpoint_problem(local)
            if problem is None:
                if ckpt is not checkpoint:
                    warn(f"warning: going on from {posixpath.basename(ckpt.path)} instead "
                         f"(the steps after it are trained again)", flush=True)
                return restore(local)
        name = posixpath.basename(ckpt.path.rstrip("/"))
        warn(f"warning: checkpoint {name} cannot be read ({problem}); it is listed in "
             f"{CORRUPT_MARKER} and not used", flush=True)
        _mark_corrupt(ckpt.filesystem, posixpath.dirname(ckpt.path.rstrip("/")), name, problem)
    warn("warning: no readable checkpoint left; the trial starts again from step 0",
         flush=True)
    return None
