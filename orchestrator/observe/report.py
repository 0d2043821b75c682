"""``qlora-sweep report SWEEP_DIR``: a static HTML report with plots, written into the sweep dir.

``SWEEP_DIR/report/`` gets ``report.html`` and one PNG per plot. The HTML embeds the PNGs too
(as data URIs), so the one file opens offline and can be sent on its own.

The Optuna plots come from the sweep's own study (``optuna.journal``, written while Optuna
searched). A random or grid sweep has no journal, and a sweep resumed with
``--allow-space-change`` has one study per space: an in-memory study is then built from the
leaderboard (each trial's values and best metric) so the same plots can be drawn.
"""

from __future__ import annotations

import base64
import html
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from .plots import loss_vs_task_figure, pyplot, training_curve
from ..sweepdir.results import leaderboard_cells
from .status import summary
from ..sweepdir.folder import SweepDir, open_sweep
from ..sweepdir.names import JOURNAL, REPORT



@dataclass
class Figure:
    name: str  # file name of the PNG
    title: str
    caption: str
    drawn: bool = False
    why_not: str = ""  # when not drawn: the reason, shown in the report instead of the plot


def load_study(sweep: SweepDir):
    """The sweep's Optuna study, and where it came from ("journal" or "leaderboard")."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = sweep.path / JOURNAL
    if journal.is_file():
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
        names = optuna.get_all_study_names(storage)
        # One study per search space: after `resume --allow-space-change` the plots span
        # every trial, which only the leaderboard holds.
        if len(names) == 1:
            return optuna.load_study(study_name=names[0], storage=storage), "journal"
    return _study_from_leaderboard(sweep), "leaderboard"


def _distribution(values: list[Any]):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    distinct = sorted(set(values), key=str)
    if (all(isinstance(v, float) for v in distinct) and len(distinct) > 6):
        low, high = min(distinct), max(distinct)
        return FloatDistribution(low, high, log=low > 0 and high / low >= 10)
    return CategoricalDistribution(distinct)


def _study_from_leaderboard(sweep: SweepDir):
    import optuna

    metric, searched = sweep.metric, sweep.searched
    study = optuna.create_study(study_name=sweep.name,
                                direction="minimize" if sweep.mode == "min" else "maximize")
    rows = [r for r in sweep.leaderboard() if all(r.get(k) is not None for k in searched)]
    dists = {k: _distribution([r[k] for r in rows]) for k in searched}
    for row in sorted(rows, key=lambda r: str(r.get("started_at") or "")):
        value = row.get(f"best_{metric}")
        done = value is not None and math.isfinite(value) and row["status"] != "errored"
        study.add_trial(optuna.trial.create_trial(
            params={k: row[k] for k in searched}, distributions=dists,
            value=value if done else None,
            state=optuna.trial.TrialState.COMPLETE if done else optuna.trial.TrialState.FAIL))
    return study


def _save(ax_or_axes, path: Path) -> None:
    plt = pyplot()
    ax = ax_or_axes.flat[0] if hasattr(ax_or_axes, "flat") else ax_or_axes
    fig = ax.get_figure()
    fig.set_size_inches(max(fig.get_size_inches()[0], 8), max(fig.get_size_inches()[1], 4.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _optuna_figures(study, out: Path) -> list[Figure]:
    import optuna
    from optuna.visualization import matplotlib as ovm

    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    varied = [k for k in (completed[0].params if completed else {})
              if len({str(t.params.get(k)) for t in completed}) > 1]
    figures = [
        Figure("history.png", "Optimization history",
               "Each trial's value in the order the search proposed it, and the best so far."),
        Figure("importances.png", "Parameter importances",
               "How much of the variation in the metric each searched setting explains "
               "(PED-ANOVA over the completed trials)."),
        Figure("parallel_coordinates.png", "Parallel coordinates",
               "Every completed trial as a line through its searched values to its metric."),
        Figure("slices.png", "Slice plots",
               "The metric against each searched setting, one panel per setting."),
    ]
    needs = {"history.png": (1, []), "importances.png": (3, varied),
             "parallel_coordinates.png": (2, varied), "slices.png": (1, [])}
    draw = {
        "history.png": lambda: ovm.plot_optimization_history(study),
        "importances.png": lambda: ovm.plot_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()),
        "parallel_coordinates.png": lambda: ovm.plot_parallel_coordinate(study, params=varied),
        "slices.png": lambda: ovm.plot_slice(study),
    }
    for fig in figures:
        minimum, params = needs[fig.name]
        if len(completed) < minimum:
            fig.why_not = (f"needs at least {minimum} completed trials "
                           f"(this sweep has {len(completed)})")
            continue
        if fig.name in ("importances.png", "parallel_coordinates.png") and not params:
            fig.why_not = "no searched setting took more than one value among completed trials"
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna's ExperimentalWarning on its matplotlib API
            _save(draw[fig.name](), out / fig.name)
        fig.drawn = True
    return figures


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; } tr.best { background: #e8f4e8; } tr.baseline { background: #fdf0e6; }
img { max-width: 100%; border: 1px solid #eee; } .caption, .note { color: #555; font-size: 0.9em; }
"""


def _table(header: list[str], rows: list[tuple[str, list[str]]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f'<tr class="{cls}">' + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
        for cls, cells in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _leaderboard_html(sweep: SweepDir, data: dict[str, Any]) -> str:
    header, table = leaderboard_cells(data["trials"], metric=data["metric"],
                                      searched=sweep.searched, baseline=sweep.baseline,
                                      share=sweep.share)
    best_id = (data["best"] or {}).get("trial_id")
    return _table(header, [("best" if row[1] == best_id else
                            "baseline" if row[2] in ("baseline", "reference") else "", row) for row in table])


def _task_html(sweep: SweepDir, data: dict[str, Any]) -> str:
    """What the winner answers: base / constant / winner on the task metrics with the sweep's
    warnings, per-label accuracy for label scorers, and a few (prompt, reference, prediction)
    examples at its best step, drawn to cover the labels or the range of errors."""
    import json

    best = sweep.best or {}
    verdict = best.get("verdict")
    if not verdict:
        return ""
    rows = verdict["rows"]
    metrics = list(rows["winner"])

    from .verdict import fmt

    table = _table(["", *[m.removeprefix("task_") for m in metrics]],
                   [("best" if name == "winner" else "baseline",
                     [name, *[fmt(values[m]) for m in metrics]]) for name, values in rows.items()])
    from .verdict import comparison_lines, conclusion

    said = comparison_lines(verdict) + [c for c in [conclusion(verdict)] if c]
    warnings_html = (_list(said) + "".join(f'<p class="note"><b>Warning:</b> {html.escape(w)}</p>'
                                           for w in verdict["warnings"]))
    at_best = next((h for h in sweep.history(best["trial_id"]) if h["step"] == best["step"]), {})
    examples = json.loads(at_best.get("task_examples") or "[]")
    sample = ""
    if examples:
        sample = ("<h3>The winner's answers (at its best step; examples drawn to cover the "
                  "labels or the range of errors)</h3>" + _table(
            ["prompt", "reference", "prediction"],
            [("", [e["prompt"], e["reference"], e["prediction"]]) for e in examples]))
    labels = _labels_html((data.get("best") or {}).get("labels") or {})
    return (f"<h2>Task metrics</h2>\n{table}\n{warnings_html}\n{labels}<p class=\"caption\">Greedy "
            f"answers to the eval prompts, scored against the references. The constant answer "
            f"is what a model that learned only the answers' format and distribution "
            f"scores.</p>\n{sample}")


def _list(lines: list[str]) -> str:
    return ("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>\n"
            if lines else "")


def _winner_html(sweep: SweepDir) -> str:
    """The runner-up against the winner (paired, where it can be) and the winner rule."""
    from .winner import lines

    return _list(lines(sweep.best or {}))


def _labels_html(views: dict[str, Any]) -> str:
    """Each label scorer's confusion matrix (rows: the reference label, columns: the answer's)
    with each label's accuracy: one accuracy can hide a label the model never answers."""
    from .status import per_label_text

    out = []
    for name, view in views.items():
        matrix = view["confusion"]
        answered = list(dict.fromkeys(p for row in matrix.values() for p in row))
        columns = list(dict.fromkeys([*matrix, *answered]))
        rows = [("", [truth, *[str(matrix[truth].get(c, 0)) for c in columns],
                      f"{view['per_label'][truth]['accuracy']:.0%}"]) for truth in matrix]
        out.append(f"<h3>{html.escape(name)}: answers per reference label</h3>"
                   + _table(["reference \\ answer", *columns, "accuracy"], rows)
                   + f'<p class="caption">{html.escape(per_label_text(view))}. (none): no '
                     f'label recognised.</p>')
    return "\n".join(out) + ("\n" if out else "")


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _figure_html(fig: Figure, out: Path) -> str:
    body = (_img(out / fig.name) if fig.drawn
            else f'<p class="note">Not drawn: {html.escape(fig.why_not)}.</p>')
    return (f"<h2>{html.escape(fig.title)}</h2>\n{body}\n"
            f'<p class="caption">{html.escape(fig.caption)}</p>')


def render_html(sweep: SweepDir, data: dict[str, Any], figures: list[Figure], out: Path,
                study_source: str) -> str:
    metric, best = data["metric"], data["best"]
    facts = [("state", data["state"]), ("metric", f"{metric} ({data['mode']}imize)"),
             ("trials", ", ".join(f"{n} {s.replace('_', ' ')}"
                                  for s, n in sorted(data["counts"].items())))]
    if data.get("budget"):
        facts.append(("budget", data["budget"]["line"]))
    if data["baseline"] is not None:
        facts.append(("base model", f"{metric} {data['baseline']:.4f} (before fine-tuning)"))
    if best:
        vs = best.get("vs_base", "-")
        facts.append(("best trial", f"{best['trial_id']}: {metric} {best['value']:.4f} at step "
                                    f"{best['step']}" + (f" ({vs} vs the base model)"
                                                         if vs != "-" else "")))
    model = (sweep.config.get("model") or {}).get("name_or_path", "?")
    facts.append(("base model id", str(model)))
    facts.append(("Optuna study", "the sweep's journal (optuna.journal)" if study_source == "journal"
                  else "built from the leaderboard (this sweep did not search with Optuna)"))
    fact_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                        for k, v in facts)
    sections = [_figure_html(f, out) for f in figures]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>qlora-sweep report: {html.escape(sweep.name)}</title><style>{_CSS}</style></head>
<body>
<h1>Sweep {html.escape(sweep.name)}</h1>
<table>{fact_rows}</table>
<h2>Leaderboard</h2>
{_leaderboard_html(sweep, data)}
<p class="caption">Best value of {html.escape(metric)} over each trial's evaluations; the base
model's row is the same evaluation before fine-tuning. "stopped early at step N": ASHA stopped
the trial at its rung of N steps. "vs base": the change from the base model: in percentage points for an accuracy (a share of
the eval items), else relative.</p>
{_winner_html(sweep)}{_task_html(sweep, data)}
{chr(10).join(sections)}
<p class="note">Written by <code>qlora-sweep report</code> from {html.escape(sweep.where)}.</p>
</body></html>
"""


def write_report(path: str | Path) -> Path:
    """Write ``SWEEP_DIR/report/report.html`` and its PNGs; return the HTML's path.

    Raises:
        UserError: not a sweep dir, or no trial has reported yet.
    """
    sweep = open_sweep(path)
    data = summary(sweep)
    out = sweep.path / REPORT
    out.mkdir(exist_ok=True)
    curves = Figure("curves.png", f"{data['metric']} of every trial",
                    "All trials against the training step on one plot; x marks where ASHA "
                    "stopped a trial, the dashed line is the base model.")
    curves.drawn = training_curve(sweep, out / curves.name)
    if not curves.drawn:
        curves.why_not = "no trial has reported an evaluation yet"
    figures = [curves]
    drawn = loss_vs_task_figure(sweep)
    if drawn is not None:
        fig, rho = drawn
        task = Figure("loss_vs_task.png", "Eval loss against the task metric",
                      "Every evaluation of every trial: a lower loss is not always a better "
                      "answer. The dash-dotted line is the constant answer's score"
                      + (f"; rank correlation over the evaluations {rho:+.2f}."
                         if rho is not None else "."))
        fig.savefig(out / task.name)
        pyplot().close(fig)
        task.drawn = True
        figures.append(task)
    study, source = load_study(sweep)
    figures += _optuna_figures(study, out)
    if not any(f.drawn for f in figures):
        raise UserError(f"SWEEP_DIR {sweep.where}: no trial has a {data['metric']} to plot yet. "
                        f"Fix: run `qlora-sweep report` again once a trial has evaluated.")
    report = out / "report.html"
    tmp = out / ".report.html.tmp"
    tmp.write_text(render_html(sweep, data, figures, out, source))
    tmp.replace(report)
    sweep.save()  # a cloud sweep dir gets the report too
    return report
