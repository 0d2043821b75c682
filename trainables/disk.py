"""The sweep's disk budget (``storage.max_gb``), as a trial sees it before saving a checkpoint."""

from __future__ import annotations

from .storage import tree_bytes


def over_budget(budget: dict | None) -> str | None:
    """Why no new checkpoint may be saved, or None. ``budget``: {"path" (a folder or a cloud
    URI), "max_bytes"}."""
    if not budget:
        return None
    used = tree_bytes(budget["path"])
    if used < budget["max_bytes"]:
        return None
    return (f"storage.max_gb: the sweep dir uses {used / 1e9:.3f} GB of its "
            f"{budget['max_bytes'] / 1e9:g} GB; this trial goes on without saving new "
            f"checkpoints. Fix: raise storage.max_gb or lower storage.keep_checkpoints.")
