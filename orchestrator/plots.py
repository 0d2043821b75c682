"""PNG plots of a sweep dir (matplotlib, no display): the curves of every trial on one plot."""

from __future__ import annotations

import math
from pathlib import Path

from .sweep_dir import SweepDir


def pyplot():
    """matplotlib's pyplot on the file-only backend (no window, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def training_curve(sweep: SweepDir, path: Path) -> bool:
    """Plot every trial's metric against the training step on one plot: the best trial in bold,
    ASHA's stopping points marked, the base model as a dashed line. False if nothing to plot.
    With ``scheduler.early_eval_samples``, the evaluations on the eval subset are dotted (their
    ``search_value``): a trial ASHA stopped before any whole-set evaluation shows there only.

    Works while the sweep runs (the best trial so far is highlighted).
    """
    fig = curve_figure(sweep)
    if fig is None:
        return False
    fig.savefig(path)
    pyplot().close(fig)
    return True


def curve_figure(sweep: SweepDir):
    """The figure :func:`training_curve` saves; None if nothing to plot."""
    import matplotlib.ticker

    from trainables.metrics import SEARCH_VALUE

    plt = pyplot()
    metric = sweep.metric
    rows = sweep.leaderboard()
    curves, subset = {}, {}
    for row in rows:
        history = sweep.history(row["trial_id"])
        whole = [(h["step"], h[metric]) for h in history if _finite(h.get(metric))]
        early = [(h["step"], h[SEARCH_VALUE]) for h in history
                 if not _finite(h.get(metric)) and _finite(h.get(SEARCH_VALUE))]
        if whole:
            curves[row["trial_id"]] = whole
        if early:
            subset[row["trial_id"]] = early
    best = sweep.best["trial_id"] if sweep.best else next(
        (r["trial_id"] for r in rows if r["trial_id"] in curves and r["status"] != "errored"), None)
    if not curves and not subset:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for trial_id, history in subset.items():
        # Marked: a trial stopped at the first rung has a single subset point.
        ax.plot(*zip(*history), color="C0" if trial_id == best else "0.7", linewidth=1,
                linestyle=":", marker=".")
    for trial_id, history in curves.items():
        if trial_id != best:
            ax.plot(*zip(*history), color="0.7", linewidth=1)
    stopped = [(curves.get(r["trial_id"]) or subset[r["trial_id"]])[-1] for r in rows
               if r["status"] == "stopped_early" and (r["trial_id"] in curves
                                                       or r["trial_id"] in subset)]
    if stopped:
        ax.scatter(*zip(*stopped), marker="x", color="0.2", zorder=3,
                   label="stopped early by ASHA")
    if best in curves:  # (before any whole-set evaluation, there is no best yet)
        label = "winner" if sweep.best else "best so far"
        ax.plot(*zip(*curves[best]), color="C0", linewidth=2.5, label=f"{label} (trial {best})")
    baseline = (sweep.baseline or {}).get(metric)
    if _finite(baseline):
        ax.axhline(baseline, color="C3", linestyle="--", linewidth=1, label="base model")
    ax.plot([], [], color="0.7", label="other trials")
    if subset:
        ax.plot([], [], color="0.7", linestyle=":", marker=".",
                label="on the eval subset (early rungs)")
    ax.set_xlabel("training step")
    ax.set_ylabel(metric)
    lowest = min(v for h in (*curves.values(), *subset.values()) for _, v in h)
    if (metric in ("eval_loss", "eval_perplexity", "train_loss") and _finite(baseline)
            and lowest > 0 and baseline > 3 * lowest):
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_title(f"{sweep.name}: {metric} of every trial")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
