"""Did the winner learn the task? Its task metrics against the base model and the constant answer.

A falling loss can mean the adapter learned only the answers' format: "Price is $81.00" to
every prompt. So the sweep's winner is compared, on each scorer's primary metric, with the
constant-answer reference (the most common training answer, or the training median for
numbers), and its answers are checked for collapse to a few values. What is found is printed
at the end of the sweep, kept in ``best.json`` and written on the model card.
"""

from __future__ import annotations

import math
from typing import Any

from trainables.scoring import (DISTINCT, NO_LABEL, collapsed, metric_modes, parse_rate,
                                primary_metric, scorer_name, share_metrics)

# Below this share of parseable answers (a number found, a label recognised), the answers are
# called unparseable: the model did not even learn the answers' format.
PARSED_FLOOR = 0.5


def _better(a: float, b: float, mode: str) -> bool:
    return a < b if mode == "min" else a > b


def _parsed(spec: dict[str, Any], winner: dict[str, float],
            confusion: dict[str, Any]) -> float | None:
    """The share of the winner's answers the scorer could read (None: not known for it)."""
    if spec["type"] == "number":
        return winner.get(f"task_{scorer_name(spec)}_parsed")
    if spec["type"] == "label" and scorer_name(spec) in confusion:
        return parse_rate(confusion[scorer_name(spec)])
    return None


def _unmatchable_references(spec: dict[str, Any], baseline: dict[str, Any],
                    confusion: dict[str, Any]) -> str | None:
    """Why the references themselves cannot be trusted, for a label scorer: some are none of
    its labels (mislabelled rows, a label missing from ``labels``, or, in a sweep dir from
    before pre-flight refused cut eval rows, a label cut short by ``data.max_length``), or
    there are more distinct references than labels."""
    if spec["type"] != "label":
        return None
    matrix = confusion.get(scorer_name(spec)) or {}
    unknown = sum((matrix.get(NO_LABEL) or {}).values())
    total = sum(sum(row.values()) for row in matrix.values())
    labels = spec.get("labels") or []
    distinct = int(baseline.get("task_reference_distinct") or 0)
    if unknown:
        return (f"{unknown} of the {total} eval references are none of the labels"
                + (f" ({', '.join(labels)})" if labels else ""))
    if labels and distinct > len(labels):
        return (f"the eval references have {distinct} distinct values for "
                f"{len(labels)} labels ({', '.join(labels)})")
    return None


def judge(*, winner: dict[str, float], baseline: dict[str, Any],
          scorers: list[dict[str, Any]], confusion: dict[str, Any] | None = None
          ) -> dict[str, Any] | None:
    """The verdict on the winner's task metrics; None when the sweep has no scorers.

    What is wrong is told apart, in this order: the references cannot be trusted ("references
    not labels": a label scorer's references that are none of its labels); the answers are
    unparseable (few hold a number, or start with a label: not even the format learned); the
    answers are readable but no better than the constant answer (only the format learned);
    the answers collapse to a few values.

    Args:
        confusion: the winner's confusion matrix per label scorer (``best.json``'s
            ``confusion``), which tells its parse rate and whether references are labels.

    Returns:
        ``{"beats_constant": bool, "collapsed": bool, "findings": [...], "warnings": [...],
        "rows": {...}}``; findings are codes (``references_not_labels``, ``answers_unparseable``,
        ``format_only``, ``collapsed``), rows hold the primary metrics and ``task_distinct``
        of the base model, the constant answer and the winner.
    """
    if not scorers:
        return None
    confusion = confusion or {}
    reference = baseline.get("constant_reference") or {}
    constant, answers = reference.get("metrics") or {}, reference.get("answers") or {}
    warnings, findings, beats = [], [], True
    primaries = [primary_metric(s) for s in scorers]
    shares = share_metrics(scorers)
    for spec, metric in zip(scorers, primaries):
        if metric is None:
            continue
        cut = _unmatchable_references(spec, baseline, confusion)
        if cut:
            findings.append("references_not_labels")
            warnings.append(
                f"references not labels: {cut}, so {metric} is scored against references that "
                f"no answer can match: the scores say little about the model. Fix the data "
                f"first: the labels of those rows, or evaluation.scorers' labels.")
        mode = metric_modes(spec)[metric]
        ours, theirs = winner.get(metric), constant.get(metric)
        if ours is None or theirs is None or not math.isfinite(theirs):
            continue
        if _better(ours, theirs, mode):
            continue
        beats = False
        parsed = _parsed(spec, winner, confusion)
        always = answers.get(scorer_name(spec), "?")
        if (parsed is not None and parsed < PARSED_FLOOR) or (
                parsed is None and metric in shares and ours == 0):
            findings.append("answers_unparseable")
            how = (f"only {parsed:.0%} of its answers {'hold a number' if spec['type'] == 'number' else 'start with one of the labels'}"
                   if parsed is not None else "none of its answers matches a reference")
            warnings.append(
                f"answers unparseable: {how}, and it scores {ours:.4g} on {metric} against "
                f"{theirs:.4g} for always answering {always!r}. It learned neither the task nor "
                f"the answers' format: look at its answers (the report's examples); train "
                f"longer, or start from a base model that knows this kind of text (the builtin "
                f"model knows only the demo's pricing data).")
        else:
            findings.append("format_only")
            warnings.append(
                f"only the format learned: the winner does not beat the constant answer on "
                f"{metric}: {ours:.4g} vs {theirs:.4g} for always answering {always!r}"
                + (f", although {parsed:.0%} of its answers are readable" if parsed is not None
                   else "")
                + ". It learned the answers' format, not the task: train longer, on more data, "
                  "or from a stronger base model.")
    distinct = winner.get(DISTINCT)
    samples = int(baseline.get("task_samples") or 0)
    is_collapsed = collapsed(distinct, references=samples,
                             distinct_references=int(baseline.get("task_reference_distinct") or 0))
    if is_collapsed:
        findings.append("collapsed")
        warnings.append(f"the winner's answers collapse: {int(distinct)} distinct answer(s) to "
                        f"{samples} eval prompts, whose references have "
                        f"{int(baseline.get('task_reference_distinct') or 0)} distinct values.")
    shown = [m for m in primaries if m] + [DISTINCT]
    rows = {"base model": {m: baseline.get(m) for m in shown},
            "constant answer": {m: constant.get(m) for m in shown},
            "winner": {m: winner.get(m) for m in shown}}
    return {"beats_constant": beats, "collapsed": is_collapsed,
            "findings": list(dict.fromkeys(findings)), "warnings": warnings, "rows": rows}


def fmt(value: Any) -> str:
    """A task metric for a table: 4 significant digits, "-" when missing or not finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.4g}"


def render(verdict: dict[str, Any]) -> str:
    """The base / constant / winner table, and what the verdict found (or that it is fine)."""
    rows = verdict["rows"]
    metrics = list(next(iter(rows.values())))
    header = ["", *[m.removeprefix("task_") for m in metrics]]
    table = [[name, *[fmt(v) for v in values.values()]] for name, values in rows.items()]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *table)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
             for line in [header, *table]]
    if verdict["warnings"]:
        lines += [f"WARNING: {w}" for w in verdict["warnings"]]
    else:
        lines.append("the winner beats the constant answer on every task metric, with varied "
                     "answers.")
    return "\n".join(lines)
