"""After the sweep: the leaderboard (one row per trial), ``best.json``, and the printed table."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from search_spaces.domains import short_name
from trainables.checkpoints import corrupt_names
from trainables.items import ITEMS, read_beside
from trainables.metrics import SEARCH_VALUE, is_task_metric


def error_summary(error: BaseException | str | None) -> str:
    """The first line a person needs: the last non-empty line of the (wrapped) error."""
    if error is None:
        return ""
    text = str(error).strip()
    # Ray wraps the trial's exception; the last non-empty line is the original message.
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    last = lines[-1] if lines else type(error).__name__
    # "trainables.callbacks.TrainingDiverged: ..." -> "TrainingDiverged: ..."
    return re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*: )", "", last)[:300]


def _usable(checkpoint) -> bool:
    """Still there (not pruned) and not found unreadable by a restarted trial; in the sweep's
    storage, local or cloud."""
    import posixpath

    from pyarrow.fs import FileType

    fs, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    return (fs.get_file_info(path).type == FileType.Directory and posixpath.basename(path)
            not in corrupt_names(fs, posixpath.dirname(path)))


def _location(checkpoint) -> str:
    """The checkpoint's path, or its URI when it is in cloud storage."""
    from pyarrow.fs import LocalFileSystem

    if isinstance(checkpoint.filesystem, LocalFileSystem):
        return checkpoint.path
    return f"{checkpoint.filesystem.type_name}://{checkpoint.path}"


# Task metrics left out of the printed table (still in leaderboard.csv and best.json).
_TASK_UNSHOWN = ("_rmsle", "_parsed")


def best_of(history, *, mode: str):
    """The best ``(value, step)`` of a trial's evaluations ``[(value, step), ...]``; None when
    it has none.

    The one rule for a trial's best step, used by the live progress line (``status.json``),
    ``leaderboard.csv``, ``status``, the final table and ``best.json``: the best value, and
    among equal values the LATEST step. Latest, because that is the checkpoint Ray's
    checkpoint manager keeps (``CheckpointConfig(num_to_keep=...)`` sorts by the score and,
    among equal scores, deletes the older checkpoints first), so the step named is the step
    whose checkpoint exists.
    """
    sign = 1.0 if mode == "max" else -1.0
    return max(history, key=lambda vs: (sign * vs[0], vs[1]), default=None)


def task_values(metrics: dict[str, Any] | None) -> dict[str, float]:
    """The task metrics (``task_*``) of one report or evaluation, finite ones only."""
    out = {}
    for key, value in (metrics or {}).items():
        if is_task_metric(key):
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                out[key] = value
    return out


def task_columns(rows: list[dict[str, Any]], baseline: dict | None = None) -> list[str]:
    """The task metrics to show as table columns, in the order they were reported."""
    seen: dict[str, None] = {}
    for source in [(baseline or {}), *rows]:
        for key in source:
            if is_task_metric(key) and not key.endswith(_TASK_UNSHOWN):
                seen[key] = None
    return list(seen)


def trial_rows(results, *, metric: str, mode: str, max_steps: int,
               searched: list[str]) -> list[dict[str, Any]]:
    """One row per trial from Ray's ``ResultGrid``, best value over the trial's whole history;
    with task metrics, their values at the trial's best checkpoint (else its best step)."""
    better = min if mode == "min" else max
    rows = []
    for result in results:
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name.removeprefix("trial_")
        df = result.metrics_dataframe
        history = []
        if df is not None and metric in df.columns:
            history = [(float(v), int(s)) for v, s in zip(df[metric], df["step"])
                       if v is not None and math.isfinite(float(v))]
        steps_run = int(df["step"].max()) if df is not None and "step" in df.columns and len(df) else 0
        if result.error is not None:
            status = "errored"
        elif steps_run >= max_steps:
            status = "completed"
        else:
            status = "stopped_early"
        best_value, best_step = best_of(history, mode=mode) or (None, None)
        # scheduler.early_eval_samples: a trial stopped before any whole-set evaluation has
        # only its values on the eval subset; shown apart, never ranked with whole-set ones.
        subset = []
        if not history and df is not None and SEARCH_VALUE in df.columns:
            subset = [float(v) for v in df[SEARCH_VALUE]
                      if v is not None and math.isfinite(float(v))]
        checkpoint, at, items = None, {}, None
        ranked = {int(m.get("step") or 0): (c, m) for c, m in (result.best_checkpoints or [])
                  if m.get(metric) is not None and math.isfinite(float(m[metric]))
                  and _usable(c)}
        chosen = best_of([(float(m[metric]), step) for step, (c, m) in ranked.items()], mode=mode)
        if chosen:
            best_ckpt, at = ranked[chosen[1]]
            checkpoint = _location(best_ckpt)
            # Each eval item's value at that checkpoint, for paired comparisons (None: the
            # evaluation did not generate, or a sweep from before they were kept).
            items = read_beside(best_ckpt.filesystem, best_ckpt.path)
        row = {"trial_id": trial_id, "status": status}
        row.update({k: (result.config or {}).get(k) for k in searched})
        row.update({f"best_{metric}": best_value, "best_step": best_step, "steps_run": steps_run,
                    "error": error_summary(result.error), "checkpoint_path": checkpoint,
                    # The checkpoint's own evaluation: the best one unless storage.max_gb
                    # stopped checkpoints before the trial's best step.
                    "checkpoint_value": at.get(metric), "checkpoint_step": at.get("step"),
                    "subset_value": better(subset) if subset else None, ITEMS: items})
        at_best = at
        if not at_best and best_step is not None and df is not None:
            at_best = df[df["step"] == best_step].iloc[-1].to_dict()
        row.update(task_values(at_best))
        if isinstance(at_best.get("task_confusion"), str):  # label scorers, at that step
            row["task_confusion"] = at_best["task_confusion"]
        rows.append(row)
    # Equal values: the trial with the smaller id first, as ``status`` and the live line do.
    rows.sort(key=lambda r: (*best_first(r, metric=metric, mode=mode), r["trial_id"]))
    return rows


def best_first(row: dict[str, Any], *, metric: str, mode: str) -> tuple:
    """Sort key of a leaderboard row: rows with a whole-set value, best first; then rows with
    only an eval-subset value (``scheduler.early_eval_samples``), never ranked among them;
    then rows with neither."""
    value, subset = row[f"best_{metric}"], row.get("subset_value")
    shown = value if value is not None else subset
    return (value is None, subset is None and value is None,
            (shown or 0) * (1 if mode == "min" else -1))


def write_leaderboard(rows: list[dict], path: Path, *, metric: str, searched: list[str]) -> None:
    tasks = [k for k in dict.fromkeys(k for r in rows for k in task_values(r)) if k != metric]
    fields = ["trial_id", "status", *searched, f"best_{metric}", "best_step", "steps_run",
              *tasks, "error"]
    if any(r.get("subset_value") is not None for r in rows):
        fields.insert(fields.index("best_step"), "subset_value")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def usable_rows(rows: list[dict], *, metric: str) -> list[dict]:
    """The rows a winner can be picked from, best first: trials that did not error, with a
    value and a usable best checkpoint."""
    return [r for r in rows if r["status"] != "errored" and r[f"best_{metric}"] is not None
            and r["checkpoint_path"]]


def best_record(rows: list[dict], *, metric: str, mode: str, searched: list[str],
                baseline: dict | None) -> dict | None:
    """The best trial that did not error, with its best checkpoint (not its last); ``value``
    and ``step`` are that checkpoint's."""
    usable = usable_rows(rows, metric=metric)
    if not usable:
        return None
    top = usable[0]  # rows are sorted best-first
    record = {
        "trial_id": top["trial_id"],
        "config": {k: top[k] for k in searched},
        "metric": metric,
        "mode": mode,
        "value": top["checkpoint_value"],
        "step": top["checkpoint_step"],
        "checkpoint_path": top["checkpoint_path"],
        "baseline_value": (baseline or {}).get(metric),
    }
    task = task_values(top)
    if task:  # with evaluation.scorers: the task metrics at that checkpoint
        record["task_metrics"] = task
    if top.get("task_confusion"):  # label scorers: {scorer: {reference: {predicted: n}}}
        record["confusion"] = json.loads(top["task_confusion"])
    return record


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _status_text(row: dict) -> str:
    retries = row.get("retries") or 0
    restarted = f" ({retries} restart{'s' if retries > 1 else ''})" if retries else ""
    if row["status"] == "errored":
        return f"errored{restarted}: {(row.get('error') or '')[:60]}"
    if row["status"] == "stopped_early" and row.get("rung"):
        return f"stopped early at step {row['rung']}{restarted}"
    return row["status"].replace("_", " ") + restarted


def is_share(metric: str, scorers: list | None = None) -> bool:
    """Whether ``metric`` is a share of the eval items (an accuracy: 0 to 1, higher is
    better), compared with the base model in percentage points rather than relatively."""
    from trainables.scoring import share_metrics

    specs = [s.model_dump() if hasattr(s, "model_dump") else s for s in scorers or []]
    return metric == "eval_mean_token_accuracy" or metric in share_metrics(specs)


def relative_change(value: float | None, base: float | None) -> float | None:
    """``(value - base) / |base|``: the "vs base" of an error-like metric (None without both,
    or with a base of 0)."""
    if value is None or base is None or not base:
        return None
    return (value - base) / abs(base)


def points_change(value: float | None, base: float | None) -> float | None:
    """``(value - base) * 100``: the "vs base" of a share (an accuracy), in percentage points;
    a base of 0 is an ordinary base here (a base model that answers nothing right)."""
    if value is None or base is None:
        return None
    return (value - base) * 100


def vs_base(value: float | None, base: float | None, *, share: bool = False) -> str:
    """The "vs base" cell: for a share (accuracy) the change in points, ``+12.5 pts``; else
    relative, ``-78.3%`` ("-" with a base of 0)."""
    if share:
        change = points_change(value, base)
        return "-" if change is None else f"{change:+.1f} pts"
    change = relative_change(value, base)
    return "-" if change is None else f"{change:+.1%}"


def leaderboard_cells(rows: list[dict], *, metric: str, searched: list[str],
                      baseline: dict | None, share: bool = False
                      ) -> tuple[list[str], list[list[str]]]:
    """The leaderboard as text cells (header, rows), then the references: the base model and,
    with task metrics, the constant answer (what learning only the answers' format and
    distribution gets). ``share``: the metric is an accuracy, "vs base" in points."""
    short = {k: short_name(k) for k in searched}
    tasks = [k for k in task_columns(rows, baseline) if k != metric]
    header = ["#", "trial", "status", *[short[k] for k in searched], f"best {metric}",
              "vs base", *[k.removeprefix("task_") for k in tasks], "step", "steps"]
    base_value = (baseline or {}).get(metric)
    table = []
    for i, r in enumerate(rows, 1):
        value = r[f"best_{metric}"]
        delta = vs_base(value, base_value, share=share)
        shown = _fmt(value)
        if value is None and r.get("subset_value") is not None:
            shown = f"{_fmt(r['subset_value'])} (subset)"
        table.append([str(i), r["trial_id"], _status_text(r), *[_fmt(r.get(k)) for k in searched],
                      shown, delta, *[_fmt(r.get(k)) for k in tasks], _fmt(r["best_step"]),
                      _fmt(r["steps_run"])])
    if base_value is not None:
        table.append(["", "base model", "baseline", *["" for _ in searched], _fmt(base_value),
                      "", *[_fmt(baseline.get(k)) for k in tasks], "", "0"])
    constant = ((baseline or {}).get("constant_reference") or {}).get("metrics")
    if constant:
        table.append(["", "constant answer", "reference", *["" for _ in searched],
                      _fmt(constant.get(metric)), "", *[_fmt(constant.get(k)) for k in tasks],
                      "", "-"])
    return header, table


def render_table(rows: list[dict], *, metric: str, searched: list[str],
                 baseline: dict | None, share: bool = False) -> str:
    """A plain-text leaderboard with the base model's row for comparison."""
    header, table = leaderboard_cells(rows, metric=metric, searched=searched, baseline=baseline,
                                      share=share)
    widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h)
              for i, h in enumerate(header)]
    out = io.StringIO()
    out.write("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in table:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")
    return out.getvalue()


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity (at any depth) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def strict_dumps(data: Any, *, indent: int | None = None) -> str:
    """JSON that strict readers accept: a value not measured (NaN, infinite) is ``null``,
    not the ``NaN`` Python's json writes by default."""
    return json.dumps(_finite(data), indent=indent, default=str, allow_nan=False)


def write_json(path: Path, data: dict) -> None:
    """Write atomically (a temp file, then rename), so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(strict_dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
