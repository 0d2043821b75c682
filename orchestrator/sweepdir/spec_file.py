"""``spec.json`` in the sweep dir: the sweep's trial spec as pre-flight built it on the driver.

With it and the tokenized data (``tokenized/``), ``promote`` evaluates adapters from the sweep
dir alone, on any machine: no data file is read again (the driver's absolute paths need not
exist there), the custom scorers come with their source (``task_eval.sources``), and the data's
identity in the model card is the one recorded when the sweep ran (``identity`` in each data
source). The rows themselves (``data_rows``, ``prepared_data``) are not in it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from trainables.spec import TrialSpec

from .names import SPEC

_ROWS = ("data_rows", "prepared_data")  # Arrow tables: tokenized/ holds the data


def save(sweep_dir: Path, spec: TrialSpec) -> None:
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
              if f.name not in _ROWS}
    tmp = Path(sweep_dir) / f".{SPEC}.tmp"
    tmp.write_text(json.dumps(fields, indent=1, default=str) + "\n")
    tmp.replace(Path(sweep_dir) / SPEC)


def load(sweep_dir: Path) -> TrialSpec | None:
    """The recorded spec; None for a sweep dir written before it was recorded (or damaged)."""
    path = Path(sweep_dir) / SPEC
    try:
        fields: dict[str, Any] = json.loads(path.read_text())
        return TrialSpec(**fields)
    except (OSError, ValueError, TypeError):
        return None
