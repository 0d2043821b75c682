"""The sweep dir's disk use, watched from the driver while trials run.

* A trial stopped early by ASHA keeps only its best checkpoint (it will never resume, and its
  best is the only one a user or ``promote`` can want); a completed trial keeps its best
  ``storage.keep_checkpoints``, as Ray already enforces.
* ``storage.max_gb``: a warning once the sweep dir passes 80 % of it; at the limit trials save
  no new checkpoint (decided in the trial, ``trainables/disk.py``) and the driver says so once.
"""

from __future__ import annotations

import logging
import math

from ray.tune import Callback

from trainables.metrics import SEARCH_VALUE
from trainables.storage import tree_bytes

log = logging.getLogger(__name__)


WARN_FRACTION = 0.8


class DiskGuard(Callback):
    def __init__(self, *, sweep_dir: str, metric: str, mode: str, max_steps: int,
                 max_bytes: int | None):
        self._sweep_dir, self._metric, self._max_steps = sweep_dir, metric, max_steps
        self._better = min if mode == "min" else max
        self._max_bytes = max_bytes
        self._reported: dict[str, list[tuple[int, float, str]]] = {}
        self._said: set[str] = set()

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        name = result.get("checkpoint_dir_name")
        # A whole-eval-set value ranks above any on the eval subset (search_value, with
        # scheduler.early_eval_samples), which counts only for a trial that has no other.
        for rank, key in ((0, self._metric), (1, SEARCH_VALUE)):
            value = result.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value) and name:
                self._reported.setdefault(trial.trial_id, []).append((rank, float(value), name))
                break
        if result.get("checkpoint_skipped"):
            self._say("full", f"warning: {result['checkpoint_skipped']}")

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info) -> None:
        if self._max_bytes:
            used = tree_bytes(self._sweep_dir)
            if used >= WARN_FRACTION * self._max_bytes:
                self._say("80", f"warning: the sweep dir uses {used / 1e9:.3f} GB, "
                                f"{used / self._max_bytes:.0%} of storage.max_gb = "
                                f"{self._max_bytes / 1e9:g}; at the limit trials stop saving "
                                f"checkpoints.")

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        reported = self._reported.pop(trial.trial_id, [])
        last = trial.last_result or {}
        if not reported or int(last.get("step", 0)) >= self._max_steps:
            return  # completed: Ray keeps its best storage.keep_checkpoints
        from trainables.checkpoints import corrupt_names

        corrupt = corrupt_names(trial.storage.storage_filesystem, trial.storage.trial_fs_path)
        usable = [rvn for rvn in reported if rvn[2] not in corrupt]
        if usable:
            rank = min(r for r, _, _ in usable)
            same = [rvn for rvn in usable if rvn[0] == rank]
            prune_checkpoints(trial, keep=self._better(same, key=lambda rvn: rvn[1])[2])

    def _say(self, key: str, text: str) -> None:
        if key not in self._said:
            self._said.add(key)
            log.info(text)


def prune_checkpoints(trial, *, keep: str) -> list[str]:
    """Delete the trial's ``checkpoint_*`` folders other than ``keep`` from its storage (local
    or cloud, through Ray's own filesystem handle); returns the names deleted."""
    from pyarrow.fs import FileSelector, FileType

    fs, base = trial.storage.storage_filesystem, trial.storage.trial_fs_path
    deleted = []
    for info in fs.get_file_info(FileSelector(base, allow_not_found=True)):
        if (info.type == FileType.Directory and info.base_name.startswith("checkpoint_")
                and info.base_name != keep):
            fs.delete_dir(info.path)
            deleted.append(info.base_name)
    return deleted
