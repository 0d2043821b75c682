"""Task metrics: score generated completions against the references (torch-free).

A scorer is declared in the config's ``evaluation.scorers`` (``orchestrator/config/schema.py``)
and arrives here as a plain dict. Each scorer turns ``(predictions, references)`` into a few
named floats, reported by every evaluation as ``task_<name>`` or ``task_<name>_<stat>``:

* ``exact_match``: the share of predictions equal to the reference after normalising
  whitespace (``task_<name>``);
* ``contains``: the share of predictions that contain the (normalised) reference;
* ``number``: a regex extracts the first number of the prediction and of the reference;
  ``_mae`` (mean absolute error), ``_rmsle`` (root mean squared log error), ``_hit`` (share
  within ``tolerance``: absolute, or relative with '10%'), ``_parsed`` (share parsed);
* ``label``: accuracy of the predicted label: the first of ``labels`` the prediction starts
  with (or, without ``labels``, its first word), against the reference's;
* ``custom``: ``function: module:function`` called with ``(predictions, references)``, which
  returns a dict of floats; the config declares its keys and their directions.

An unparseable prediction is wrong, never an error: for ``number`` it counts as the answer 0
(its error is the whole reference value) and as a miss. ``task_distinct`` counts the distinct
(normalised) predictions, so an adapter whose answers collapse to one value shows.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import re
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PREFIX = "task_"
DISTINCT = "task_distinct"
# The first number in a text: digits with optional thousands commas and decimals.
NUMBER_PATTERN = r"(-?\d[\d,]*(?:\.\d+)?)"
NUMBER_STATS = {"mae": "min", "rmsle": "min", "hit": "max", "parsed": "max"}
DEFAULT_NAMES = {"exact_match": "exact_match", "contains": "contains", "number": "number",
                 "label": "label_accuracy"}


class ScorerError(RuntimeError):
    """A user's scorer raised or returned something that is not a dict of numbers."""


class ScorerImportError(ScorerError):
    """The scorer's module could not be imported here. Unlike a scorer that raises, this can
    be the node's fault (a module only the driver had, a package missing on one image), so a
    trial that meets it is restarted (maybe elsewhere) rather than failed for good."""


def scorer_name(spec: dict[str, Any]) -> str:
    """The scorer's name: given, or its type (a custom scorer: its function's name)."""
    if spec.get("name"):
        return spec["name"]
    if spec["type"] == "custom":
        return spec["function"].rpartition(":")[2]
    return DEFAULT_NAMES[spec["type"]]


def metric_modes(spec: dict[str, Any]) -> dict[str, str]:
    """Every metric the scorer reports, with the direction that is better; the first is its
    primary metric (what "beats the constant answer" is judged on)."""
    name = PREFIX + scorer_name(spec)
    if spec["type"] == "number":
        return {f"{name}_{stat}": mode for stat, mode in NUMBER_STATS.items()}
    if spec["type"] == "custom":
        return {f"{name}_{key}": mode for key, mode in (spec.get("metrics") or {}).items()}
    return {name: "max"}


def all_metric_modes(specs: Sequence[dict[str, Any]]) -> dict[str, str]:
    """The task metrics a sweep with these scorers reports (``task_distinct`` included)."""
    modes: dict[str, str] = {}
    for spec in specs:
        modes.update(metric_modes(spec))
    if specs:
        modes[DISTINCT] = "max"
    return modes


def share_metrics(specs: Sequence[dict[str, Any]]) -> set[str]:
    """The task metrics that are shares of the eval items (0 to 1, higher is better: accuracy,
    exact match, contains, a number scorer's hit and parsed rates). A change in them is read in
    percentage points; a custom scorer's metrics are not known to be shares."""
    shares = set()
    for spec in specs:
        name = PREFIX + scorer_name(spec)
        if spec["type"] == "number":
            shares |= {f"{name}_hit", f"{name}_parsed"}
        elif spec["type"] != "custom":
            shares.add(name)
    return shares


def primary_metric(spec: dict[str, Any]) -> str | None:
    return next(iter(metric_modes(spec)), None)


def normalize(text: str) -> str:
    """Whitespace runs become one space; leading and trailing whitespace goes."""
    return " ".join(str(text).split())


def extract_number(text: str, pattern: str = NUMBER_PATTERN) -> float | None:
    """The number the pattern's first group (or whole match) finds in ``text``, or None."""
    match = re.search(pattern, str(text))
    if match is None:
        return None
    raw = match.group(1) if match.groups() else match.group(0)
    try:
        value = float(raw.replace(",", "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_amount(value: float | str, *, absolute: str = "5", relative: str = "10%"
                 ) -> tuple[float, bool]:
    """``5`` -> ``(5.0, False)`` (absolute); ``"10%"`` -> ``(0.1, True)`` (relative).
    ``absolute`` and ``relative`` are the examples the error message gives.

    Raises:
        ValueError: not a non-negative number or percentage.
    """
    text = str(value).strip()
    is_relative = text.endswith("%")
    try:
        number = float(text.rstrip("%"))
    except ValueError:
        raise ValueError(f"must be a number ({absolute}, absolute) or a percentage "
                         f"('{relative}', relative), got {value!r}. Fix: write e.g. {absolute} or "
                         f"'{relative}'") from None
    if not number >= 0:
        raise ValueError(f"must be 0 or more, got {value!r}. Fix: write e.g. {absolute} or "
                         f"'{relative}'")
    return (number / 100 if is_relative else number), is_relative


def parse_tolerance(value: float | str) -> tuple[float, bool]:
    """A number scorer's ``tolerance``: see :func:`parse_amount`."""
    return parse_amount(value)


def _number_stats(spec: dict[str, Any], predictions: Sequence[str],
                  references: Sequence[str]) -> dict[str, float]:
    pattern = spec.get("pattern") or NUMBER_PATTERN
    tolerance, relative = parse_tolerance(spec.get("tolerance", "10%"))
    errors, log_errors, hits, parsed, scored = [], [], 0, 0, 0
    for prediction, reference in zip(predictions, references):
        truth = extract_number(reference, pattern)
        if truth is None:
            continue  # a reference without a number cannot be scored
        scored += 1
        guess = extract_number(prediction, pattern)
        parsed += guess is not None
        value = 0.0 if guess is None else guess
        errors.append(abs(value - truth))
        log_errors.append((math.log1p(max(value, 0.0)) - math.log1p(max(truth, 0.0))) ** 2)
        allowed = tolerance * abs(truth) if relative else tolerance
        hits += guess is not None and abs(guess - truth) <= allowed
    if not scored:
        return {stat: float("nan") for stat in NUMBER_STATS}
    return {"mae": sum(errors) / scored, "rmsle": math.sqrt(sum(log_errors) / scored),
            "hit": hits / scored, "parsed": parsed / scored}


def _label(text: str, labels: Sequence[str] | None) -> str:
    text = normalize(text).lower()
    if labels:
        for label in sorted(labels, key=len, reverse=True):  # "positive" before "pos"
            if text.startswith(label.lower()):
                return label.lower()
        return ""
    words = text.split()
    return words[0].strip(".,;:!?") if words else ""


def load_function(reference: str, search_path: Sequence[str] = ()) -> Callable:
    """Import ``module:function``; ``search_path`` folders are tried first (the config's).

    Raises:
        ScorerError: it cannot be imported, or is not callable.
    """
    module_name, _, attr = reference.partition(":")
    for folder in reversed(list(search_path)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    if module_name not in sys.modules:
        # Python remembers a folder that was missing (and a folder's listing) from an earlier
        # try; a reused worker must see a module that has arrived since.
        importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # a user's module may fail in any way while importing
        raise ScorerImportError(f"cannot import module {module_name!r} ({type(err).__name__}: "
                                f"{err})") from None
    function = getattr(module, attr, None)
    if function is None:
        raise ScorerError(f"module {module_name!r} has no {attr!r}")
    if not callable(function):
        raise ScorerError(f"{reference} is a {type(function).__name__}, not a function")
    return function


def module_sources(reference: str, search_path: Sequence[str]) -> dict[str, str]:
    """The source of a custom scorer's module (``module:function``, imported already), as
    ``{path relative to its folder: text}``, when it lies in one of ``search_path``'s folders
    (the config's): what a worker without the driver's files needs to import it (a package:
    all its ``.py`` files). {} for a module installed on the Python path, which every node
    must have anyway."""
    top = sys.modules[reference.partition(":")[0].split(".")[0]]
    file = getattr(top, "__file__", None)
    if not file:
        return {}
    file = Path(file).resolve()
    for folder in map(Path, search_path):
        folder = folder.resolve()
        if folder in file.parents:
            files = sorted(file.parent.rglob("*.py")) if hasattr(top, "__path__") else [file]
            return {f.relative_to(folder).as_posix(): f.read_text() for f in files}
    return {}


_unpacked: dict[str, str] = {}  # this process's folders of shipped sources, by their digest


def unpack_sources(sources: dict[str, str]) -> str:
    """Write shipped module sources (:func:`module_sources`) into a folder of this process's
    own (once per process for the same sources) and return it."""
    digest = hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()
    folder = _unpacked.get(digest)
    if folder is None or not Path(folder).is_dir():
        folder = tempfile.mkdtemp(prefix="qlora-sweep-scorers-")
        for relative, text in sources.items():
            (Path(folder) / relative).parent.mkdir(parents=True, exist_ok=True)
            (Path(folder) / relative).write_text(text)
        _unpacked[digest] = folder
    return folder


def score(spec: dict[str, Any], predictions: Sequence[str], references: Sequence[str], *,
          search_path: Sequence[str] = ()) -> dict[str, float]:
    """The scorer's metrics (named as :func:`metric_modes` lists them).

    Raises:
        ScorerError: a custom scorer raised, or returned something else than its metrics.
    """
    name = PREFIX + scorer_name(spec)
    kind = spec["type"]
    n = max(1, len(references))
    if kind == "exact_match":
        return {name: sum(normalize(p) == normalize(r)
                          for p, r in zip(predictions, references)) / n}
    if kind == "contains":
        return {name: sum(normalize(r) in normalize(p)
                          for p, r in zip(predictions, references)) / n}
    if kind == "label":
        labels = spec.get("labels")
        return {name: sum(_label(p, labels) == _label(r, labels) != ""
                          for p, r in zip(predictions, references)) / n}
    if kind == "number":
        stats = _number_stats(spec, predictions, references)
        return {f"{name}_{stat}": value for stat, value in stats.items()}
    function = load_function(spec["function"], search_path)
    try:
        result = function(list(predictions), list(references))
    except Exception as err:
        raise ScorerError(f"the scorer {spec['function']} raised {type(err).__name__}: "
                          f"{err}") from None
    declared = list((spec.get("metrics") or {}))
    if not isinstance(result, dict):
        raise ScorerError(f"the scorer {spec['function']} returned a "
                          f"{type(result).__name__}; it must return a dict of numbers with "
                          f"the keys declared in its metrics: {', '.join(declared)}")
    missing = [k for k in declared if k not in result]
    if missing:
        raise ScorerError(f"the scorer {spec['function']} returned no {', '.join(missing)} "
                          f"(it returned {', '.join(map(str, result)) or 'nothing'}); every key "
                          f"declared in its metrics must be returned")
    out = {}
    for key in declared:
        try:
            out[f"{name}_{key}"] = float(result[key])
        except (TypeError, ValueError):
            raise ScorerError(f"the scorer {spec['function']} returned {result[key]!r} for "
                              f"{key!r}, not a number") from None
    return out


def score_all(specs: Sequence[dict[str, Any]], predictions: Sequence[str],
              references: Sequence[str], *, search_path: Sequence[str] = ()) -> dict[str, float]:
    """Every scorer's metrics and ``task_distinct``."""
    out: dict[str, float] = {}
    for spec in specs:
        out.update(score(spec, predictions, references, search_path=search_path))
    out[DISTINCT] = float(len({normalize(p) for p in predictions}))
    return out


def constant_answer(spec: dict[str, Any], completions: Sequence[str]) -> str:
    """The answer a model that learned only the answers' distribution would give to every
    prompt: for a number scorer the training completion holding the median number, else the
    most common training completion."""
    if spec["type"] == "number":
        pattern = spec.get("pattern") or NUMBER_PATTERN
        valued = sorted((v, c) for c in completions
                        if (v := extract_number(c, pattern)) is not None)
        if valued:
            median = statistics.median_low([v for v, _ in valued])
            return next(c for v, c in valued if v == median)
    counts = Counter(normalize(c) for c in completions)
    return counts.most_common(1)[0][0] if counts else ""


def constant_reference(specs: Sequence[dict[str, Any]], completions: Sequence[str],
                       references: Sequence[str]) -> dict[str, Any]:
    """Each scorer's metrics for its constant answer on the eval references, and the
    answers (a custom scorer is given the most common completion)."""
    metrics: dict[str, Any] = {}
    answers: dict[str, str] = {}
    for spec in specs:
        answer = constant_answer(spec, completions)
        answers[scorer_name(spec)] = answer
        metrics.update(score(spec, [answer] * len(references), references))
    metrics[DISTINCT] = 1.0
    return {"metrics": metrics, "answers": answers}


# Answers collapse below this share of the references' own distinct values.
COLLAPSE_SHARE = 0.2


def collapse_floor(distinct_references: int) -> int:
    """The fewest distinct answers that are not a collapse, judged against the references' own
    number of distinct values (not the number of prompts: 80 references with 5 distinct labels
    are well answered with 5): a fifth of theirs, at least 2 where they have 2 or more. So 6
    distinct answers where the references have 70 is a collapse, 14 is not; one label
    answered everywhere where the references have 3 is, two labels are not."""
    return min(distinct_references, max(2, math.ceil(COLLAPSE_SHARE * distinct_references)))


def collapsed(distinct: float | None, *, distinct_references: int) -> bool:
    """Whether the answers collapsed to a few values (:func:`collapse_floor`)."""
    if distinct is None or not math.isfinite(distinct):
        return False
    return distinct < collapse_floor(distinct_references)


NO_LABEL = "(none)"  # a prediction (or reference) that starts with none of the labels


def confusion(spec: dict[str, Any], predictions: Sequence[str],
              references: Sequence[str]) -> dict[str, dict[str, int]]:
    """A label scorer's confusion matrix: ``{reference label: {predicted label: count}}``, the
    labels as the scorer reads them (``(none)``: no known label: an unparseable answer, or a
    reference that is not one of the labels, such as one cut short)."""
    labels = spec.get("labels")
    matrix: dict[str, dict[str, int]] = {}
    for prediction, reference in zip(predictions, references):
        truth = _label(reference, labels) or NO_LABEL
        guess = _label(prediction, labels) or NO_LABEL
        row = matrix.setdefault(truth, {})
        row[guess] = row.get(guess, 0) + 1
    return matrix


def confusions(specs: Sequence[dict[str, Any]], predictions: Sequence[str],
               references: Sequence[str]) -> dict[str, dict[str, dict[str, int]]]:
    """The confusion matrix of every label scorer, by scorer name."""
    return {scorer_name(s): confusion(s, predictions, references)
            for s in specs if s["type"] == "label"}


def per_label(matrix: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    """Per reference label: how many eval items have it and the share answered right."""
    out = {}
    for truth, row in matrix.items():
        n = sum(row.values())
        right = row.get(truth, 0) if truth != NO_LABEL else 0
        out[truth] = {"items": n, "accuracy": right / n if n else float("nan")}
    return out


def parse_rate(matrix: dict[str, dict[str, int]]) -> float | None:
    """The share of answers that start with one of the labels (None: no items)."""
    n = sum(sum(row.values()) for row in matrix.values())
    unparsed = sum(row.get(NO_LABEL, 0) for row in matrix.values())
    return (n - unparsed) / n if n else None


def pick_examples(specs: Sequence[dict[str, Any]], predictions: Sequence[str],
                  references: Sequence[str], k: int) -> list[int]:
    """The indices of ``k`` eval items to show, drawn to cover what the scorers judge: every
    reference label in turn (a label scorer), the whole range of errors from the best answer
    to the worst (a number scorer), else the first ``k``. The first four items can all share
    one label, and a model answering that label everywhere would then look right."""
    n = min(len(predictions), len(references))
    if k <= 0 or n == 0:
        return []
    if k >= n:
        return list(range(n))
    spec = next((s for s in specs if s["type"] in ("label", "number")), None)
    if spec is not None and spec["type"] == "label":
        groups: dict[str, list[int]] = {}
        for i in range(n):
            groups.setdefault(_label(references[i], spec.get("labels")) or NO_LABEL, []).append(i)
        picked: list[int] = []
        queues = sorted(groups.values(), key=len, reverse=True)  # the common labels first
        while len(picked) < k:
            for queue in queues:
                if queue and len(picked) < k:
                    picked.append(queue.pop(0))
        return sorted(picked)
    if spec is not None:
        pattern = spec.get("pattern") or NUMBER_PATTERN
        errors = []
        for i in range(n):
            truth = extract_number(references[i], pattern)
            if truth is None:
                continue
            guess = extract_number(predictions[i], pattern)
            errors.append((math.inf if guess is None else abs(guess - truth), i))
        if len(errors) >= k:
            errors.sort()
            # Evenly spaced over the sorted errors: the best, the worst, and between.
            return sorted({errors[round(j * (len(errors) - 1) / (k - 1))][1] if k > 1
                           else errors[len(errors) // 2][1] for j in range(k)})
    return list(range(k))
