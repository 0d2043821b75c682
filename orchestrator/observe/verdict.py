"""Did the winner learn the task? Its task metrics against the base model and the constant answer.

A falling loss can mean the adapter learned only the answers' format: "Price is $81.00" to
every prompt. So the sweep's winner is compared, on each scorer's primary metric, with the
constant-answer reference (the most common training answer, or the training median for
numbers) and with the base model, and its answers are checked for collapse to a few values
(against the references' own number of distinct values). What is found is printed at the end
of the sweep, kept in ``best.json`` and written on the model card and the report.

"Beats" is a paired comparison over the same eval items (``paired.py``): the winner's
per-item values (``trainables/items.py``, kept beside its checkpoint) against the constant
answer's and the base model's (in ``baseline.json``), with a 95 % confidence interval. A
difference within noise is "not distinguishable", never a win. Without per-item values (a
custom scorer's metrics, a sweep dir from before they were kept) the means are compared, and
the verdict says so.
"""

from __future__ import annotations

import math
from typing import Any

from trainables.items import ITEMS
from trainables.scoring import (DISTINCT, NO_LABEL, collapse_floor, collapsed, metric_modes,
                                parse_rate, primary_metric, scorer_name, share_metrics)

from .paired import BETTER, NOISE, Paired, compare_records, sentence

# Below this share of parseable answers (a number found, a label recognised), the answers are
# called unparseable: the model did not even learn the answers' format.
PARSED_FLOOR = 0.5
CONSTANT, BASE = "constant answer", "base model"


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


def _comparison(p: Paired, against: str, share: bool) -> dict[str, Any]:
    return {"against": against, **p.as_dict(),
            "sentence": sentence(p, ours="winner", theirs=against, share=share)}


def judge(*, winner: dict[str, float], baseline: dict[str, Any],
          scorers: list[dict[str, Any]], confusion: dict[str, Any] | None = None,
          items: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The verdict on the winner's task metrics; None when the sweep has no scorers.

    What is wrong is told apart, in this order: the references cannot be trusted ("references
    not labels": a label scorer's references that are none of its labels); the answers are
    unparseable (few hold a number, or start with a label: not even the format learned); the
    answers are readable but not distinguishable from the constant answer (within noise), or
    no better than it (only the format learned); the answers collapse to a few values.

    Args:
        confusion: the winner's confusion matrix per label scorer (``best.json``'s
            ``confusion``), which tells its parse rate and whether references are labels.
        items: the winner's per-item values at its best checkpoint
            (``trainables.items.record``); with the baseline's, "beats" is a paired
            comparison, else a comparison of the means.

    Returns:
        ``{"beats_constant": bool, "beats_base": bool | None, "collapsed": bool, "findings":
        [...], "warnings": [...], "comparisons": [...], "unpaired": [...], "rows": {...}}``;
        findings are codes (``references_not_labels``, ``answers_unparseable``,
        ``not_distinguishable``, ``format_only``, ``collapsed``); comparisons the paired ones
        (``paired.Paired`` fields, ``against`` and the printed ``sentence``); unpaired the
        primary metrics compared by their means only; rows hold the primary metrics and
        ``task_distinct`` of the base model, the constant answer and the winner.
    """
    if not scorers:
        return None
    confusion = confusion or {}
    reference = baseline.get("constant_reference") or {}
    constant, answers = reference.get("metrics") or {}, reference.get("answers") or {}
    warnings, findings, comparisons, unpaired = [], [], [], []
    beats, beats_base = True, None
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
        share = metric in shares
        vs_constant = compare_records(items, reference.get(ITEMS), metric=metric, mode=mode)
        vs_base = compare_records(items, baseline.get(ITEMS), metric=metric, mode=mode)
        for against, paired in ((CONSTANT, vs_constant), (BASE, vs_base)):
            if paired is not None:
                comparisons.append(_comparison(paired, against, share))
        ours, base = winner.get(metric), baseline.get(metric)
        if vs_base is not None or (ours is not None and base is not None):
            better_than_base = (vs_base.verdict == BETTER if vs_base is not None
                                else _better(ours, base, mode))
            beats_base = better_than_base and beats_base is not False
        theirs = constant.get(metric)
        if ours is None or theirs is None or not math.isfinite(theirs):
            continue
        if vs_constant is None:
            unpaired.append(metric)
            wins = _better(ours, theirs, mode)
        else:
            wins = vs_constant.verdict == BETTER
        if wins:
            continue
        beats = False
        parsed = _parsed(spec, winner, confusion)
        always = answers.get(scorer_name(spec), "?")
        said = (f" ({sentence(vs_constant, ours='winner', theirs=CONSTANT, share=share)})"
                if vs_constant is not None else "")
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
        elif vs_constant is not None and vs_constant.verdict == NOISE:
            findings.append("not_distinguishable")
            warnings.append(
                f"not distinguishable from a constant answer on {metric}: always answering "
                f"{always!r} does as well within noise{said}. It learned the answers' format; "
                f"whatever it learned of the task, {vs_constant.items} eval items cannot tell "
                f"it from noise. Train longer, on more data, or from a stronger base model "
                f"(more eval items, evaluation.samples, narrow the interval).")
        else:
            findings.append("format_only")
            warnings.append(
                f"only the format learned: the winner does not beat the constant answer on "
                f"{metric}: {ours:.4g} vs {theirs:.4g} for always answering {always!r}"
                + (f", although {parsed:.0%} of its answers are readable" if parsed is not None
                   else "") + said
                + ". It learned the answers' format, not the task: train longer, on more data, "
                  "or from a stronger base model.")
    distinct = winner.get(DISTINCT)
    samples = int(baseline.get("task_samples") or 0)
    varied = int(baseline.get("task_reference_distinct") or 0)
    is_collapsed = collapsed(distinct, distinct_references=varied)
    if is_collapsed:
        findings.append("collapsed")
        warnings.append(f"the winner's answers collapse: {int(distinct)} distinct answer(s) to "
                        f"{samples} eval prompts, whose references have {varied} distinct "
                        f"values (fewer than {collapse_floor(varied)}, a fifth of theirs, is a "
                        f"collapse).")
    shown = [m for m in primaries if m] + [DISTINCT]
    rows = {BASE: {m: baseline.get(m) for m in shown},
            CONSTANT: {m: constant.get(m) for m in shown},
            "winner": {m: winner.get(m) for m in shown}}
    return {"beats_constant": beats, "beats_base": beats_base, "collapsed": is_collapsed,
            "findings": list(dict.fromkeys(findings)), "warnings": warnings,
            "comparisons": comparisons, "unpaired": unpaired, "rows": rows,
            "distinct_answers": distinct, "distinct_references": varied or None}


def fmt(value: Any) -> str:
    """A task metric for a table: 4 significant digits, "-" when missing or not finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.4g}"


def comparison_lines(verdict: dict[str, Any]) -> list[str]:
    """The paired comparisons as printed (one line each), then which metrics were compared by
    their means only."""
    lines = [c["sentence"] for c in verdict.get("comparisons") or []]
    if verdict.get("unpaired"):
        lines.append(f"{', '.join(verdict['unpaired'])}: compared by the means only (no "
                     f"per-item values to pair: a custom scorer's metric, or a sweep dir from "
                     f"before they were kept), so noise is not accounted for.")
    return lines


def conclusion(verdict: dict[str, Any]) -> str | None:
    """The closing sentence when nothing is wrong (None when something is)."""
    if verdict["warnings"]:
        return None
    how = (" (a paired comparison over the eval items, its 95 % CI clear of 0)"
           if verdict.get("comparisons") and not verdict.get("unpaired") else "")
    distinct, varied = verdict.get("distinct_answers"), verdict.get("distinct_references")
    counts = (f" ({int(distinct)} distinct; the references have {int(varied)})"
              if distinct is not None and varied else "")
    return (f"the winner beats the constant answer on every task metric{how}, with varied "
            f"answers{counts}.")


def render(verdict: dict[str, Any]) -> str:
    """The base / constant / winner table, the paired comparisons, and what the verdict found
    (or that it is fine)."""
    rows = verdict["rows"]
    metrics = list(next(iter(rows.values())))
    header = ["", *[m.removeprefix("task_") for m in metrics]]
    table = [[name, *[fmt(v) for v in values.values()]] for name, values in rows.items()]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *table)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
             for line in [header, *table]]
    lines += comparison_lines(verdict)
    if verdict["warnings"]:
        lines += [f"WARNING: {w}" for w in verdict["warnings"]]
    else:
        lines.append(conclusion(verdict))
    return "\n".join(lines)
