"""Per-item task scores: for each eval item, the value whose mean over the items is the task
metric (torch-free).

A task metric is one number over the eval items; whether one model beats another (the
constant answer, the base model, the champion on the Hub) needs the items themselves, paired:
the same item answered by both (``orchestrator/observe/paired.py``). Only metrics that are
means of per-item values have them:

* ``number``: ``_mae`` (the item's absolute error), ``_hit`` and ``_parsed`` (0 or 1); an item
  whose reference holds no number is not scored, and is ``None`` here. ``_rmsle`` is the root
  of a mean, not a mean: no per-item values.
* ``exact_match``, ``contains``, ``label``: 1 for a right answer, else 0.
* ``custom``: none (a custom scorer returns only its aggregates).

The record is compact (``{"digest", "items", "values": {metric: [value, ...]}}``): ``digest``
identifies the references in their order, so values are paired only over the same items.
A trial writes it beside each checkpoint as ``task_items.json``; the baseline keeps the base
model's and the constant answer's in ``baseline.json``.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Sequence
from typing import Any

from .scoring import (NUMBER_PATTERN, PREFIX, _label, extract_number, normalize,
                      parse_tolerance, scorer_name)

ITEMS = "task_items"  # the key of the per-item record in an evaluation's metrics
ITEMS_FILE = "task_items.json"  # beside a checkpoint: its evaluation's per-item record


def digest(references: Sequence[str]) -> str:
    """What identifies a list of eval references, in order (normalised text, hashed)."""
    text = json.dumps([normalize(r) for r in references])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _number_items(spec: dict[str, Any], predictions: Sequence[str],
                  references: Sequence[str]) -> dict[str, list[float | None]]:
    pattern = spec.get("pattern") or NUMBER_PATTERN
    tolerance, relative = parse_tolerance(spec.get("tolerance", "10%"))
    errors, hits, parsed = [], [], []
    for prediction, reference in zip(predictions, references):
        truth = extract_number(reference, pattern)
        if truth is None:  # not scored, as in trainables.scoring._number_stats
            for values in (errors, hits, parsed):
                values.append(None)
            continue
        guess = extract_number(prediction, pattern)
        errors.append(abs((0.0 if guess is None else guess) - truth))
        allowed = tolerance * abs(truth) if relative else tolerance
        hits.append(float(guess is not None and abs(guess - truth) <= allowed))
        parsed.append(float(guess is not None))
    name = PREFIX + scorer_name(spec)
    return {f"{name}_mae": errors, f"{name}_hit": hits, f"{name}_parsed": parsed}


def item_values(specs: Sequence[dict[str, Any]], predictions: Sequence[str],
                references: Sequence[str]) -> dict[str, list[float | None]]:
    """Per task metric that is a mean over the items, each item's value (see the module)."""
    out: dict[str, list[float | None]] = {}
    for spec in specs:
        name = PREFIX + scorer_name(spec)
        kind = spec["type"]
        pairs = list(zip(predictions, references))
        if kind == "number":
            out.update(_number_items(spec, predictions, references))
        elif kind == "exact_match":
            out[name] = [float(normalize(p) == normalize(r)) for p, r in pairs]
        elif kind == "contains":
            out[name] = [float(normalize(r) in normalize(p)) for p, r in pairs]
        elif kind == "label":
            labels = spec.get("labels")
            out[name] = [float(_label(p, labels) == _label(r, labels) != "") for p, r in pairs]
    return out


def record(specs: Sequence[dict[str, Any]], predictions: Sequence[str],
           references: Sequence[str]) -> dict[str, Any]:
    """The per-item record of one evaluation (what ``task_items.json`` holds)."""
    return {"digest": digest(references), "items": len(references),
            "values": item_values(specs, predictions, references)}


def read_beside(fs, checkpoint_path: str) -> dict[str, Any] | None:
    """The per-item record written with a checkpoint (``fs``: a pyarrow filesystem, local or
    cloud); None when it has none (a sweep from before they were kept, an evaluation that did
    not generate, or an unreadable file)."""
    try:
        with fs.open_input_stream(posixpath.join(checkpoint_path.rstrip("/"), ITEMS_FILE)) as f:
            data = json.loads(f.read().decode())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("values"), dict) else None
