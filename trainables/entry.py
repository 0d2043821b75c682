"""What the driver hands to Ray: the trainable and the one-off tasks on a trial's resources.

Ray ships a function by reference (its module and name), and the process that runs it imports
that module. These wrappers import :mod:`trainables.trial` (torch, transformers, PEFT,
bitsandbytes, TRL) only when they run, on the worker: the driver, which only names them, is
spared about 4 s of CPU at every ``run`` and ``resume`` (tests/test_layout.py checks it).
"""

from __future__ import annotations

from typing import Any

from .spec import TrialSpec


def tune_trainable(config: dict[str, Any], *, base: TrialSpec) -> None:
    """Ray Tune's entry point: :func:`trainables.trial.tune_trainable`."""
    from .trial import tune_trainable as run

    run(config, base=base)


def evaluate_baseline(spec: TrialSpec) -> dict[str, Any]:
    """:func:`trainables.trial.evaluate_baseline`, as a Ray task."""
    from .trial import evaluate_baseline as run

    return run(spec)


def prepare_data(spec: TrialSpec) -> dict[str, Any]:
    """:func:`trainables.trial.prepare_data`, as a Ray task."""
    from .trial import prepare_data as run

    return run(spec)


def evaluate_adapter_files(spec: TrialSpec, adapters: list[dict[str, bytes]]
                           ) -> list[dict[str, float]]:
    """:func:`trainables.trial.evaluate_adapters` on adapters handed over as their files
    (``{file name: bytes}`` each), as a Ray task on a node that cannot read the folders they
    came from (``promote --address``)."""
    import shutil
    import tempfile
    from pathlib import Path

    from .trial import evaluate_adapters as run

    root = Path(tempfile.mkdtemp(prefix="qlora-sweep-adapters-"))
    try:
        dirs = []
        for i, files in enumerate(adapters):
            folder = root / str(i)
            folder.mkdir()
            for name, data in files.items():
                (folder / name).write_bytes(data)
            dirs.append(str(folder))
        return run(spec, dirs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
