"""The sweep's disk budget (``storage.max_gb``), as a trial sees it before saving a checkpoint."""

from __future__ import annotations

import os
from pathlib import Path


def folder_bytes(path: str | os.PathLike) -> int:
    """Bytes of the regular files under ``path`` (0 when it does not exist)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # deleted while walking (Ray pruning a checkpoint)
                pass
    return total


def over_budget(budget: dict | None) -> str | None:
    """Why no new checkpoint may be saved, or None. ``budget``: {"path", "max_bytes"}."""
    if not budget or not Path(budget["path"]).is_dir():
        return None
    used = folder_bytes(budget["path"])
    if used < budget["max_bytes"]:
        return None
    return (f"storage.max_gb: the sweep dir uses {used / 1e9:.3f} GB of its "
            f"{budget['max_bytes'] / 1e9:g} GB; this trial goes on without saving new "
            f"checkpoints. Fix: raise storage.max_gb or lower storage.keep_checkpoints.")
