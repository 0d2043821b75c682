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

from trainables.scoring import DISTINCT, collapsed, metric_modes, primary_metric, scorer_name


def _better(a: float, b: float, mode: str) -> bool:
    return a < b if mode == "min" else a > b


def judge(*, winner: dict[str, float], baseline: dict[str, Any],
          scorers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The verdict on the winner's task metrics; None when the sweep has no scorers.

    Returns:
        ``{"beats_constant": bool, "collapsed": bool, "warnings": [...], "rows": {...}}``; rows
        holds the primary metrics and ``task_distinct`` of the base model, the constant answer
        and the winner.
    """
    if not scorers:
        return None
    reference = baseline.get("constant_reference") or {}
    constant, answers = reference.get("metrics") or {}, reference.get("answers") or {}
    warnings, beats = [], True
    primaries = [primary_metric(s) for s in scorers]
    for spec, metric in zip(scorers, primaries):
        if metric is None:
            continue
        mode = metric_modes(spec)[metric]
        ours, theirs = winner.get(metric), constant.get(metric)
        if ours is None or theirs is None or not math.isfinite(theirs):
            continue
        if not _better(ours, theirs, mode):
            beats = False
            warnings.append(
                f"the winner does not beat the constant answer on {metric}: {ours:.4g} vs "
                f"{theirs:.4g} for always answering {answers.get(scorer_name(spec), '?')!r}. "
                f"It learned the answers' format, not the task: train longer, on more data, "
                f"or from a stronger base model.")
    distinct = winner.get(DISTINCT)
    samples = int(baseline.get("task_samples") or 0)
    is_collapsed = collapsed(distinct, references=samples,
                             distinct_references=int(baseline.get("task_reference_distinct") or 0))
    if is_collapsed:
        warnings.append(f"the winner's answers collapse: {int(distinct)} distinct answer(s) to "
                        f"{samples} eval prompts, whose references have "
                        f"{int(baseline.get('task_reference_distinct') or 0)} distinct values.")
    shown = [m for m in primaries if m] + [DISTINCT]
    rows = {"base model": {m: baseline.get(m) for m in shown},
            "constant answer": {m: constant.get(m) for m in shown},
            "winner": {m: winner.get(m) for m in shown}}
    return {"beats_constant": beats, "collapsed": is_collapsed, "warnings": warnings,
            "rows": rows}


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
