"""PNG plots of a sweep dir (matplotlib, no display): the curves of every trial on one plot."""

from __future__ import annotations

import math
from pathlib import Path

from ..sweepdir.folder import SweepDir


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
    constant = (((sweep.baseline or {}).get("constant_reference") or {}).get("metrics")
                or {}).get(metric)
    if _finite(constant):
        ax.axhline(constant, color="C2", linestyle="-.", linewidth=1, label="constant answer")
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


def task_metric(sweep: SweepDir) -> str | None:
    """The task metric a sweep's plots judge answers by: its objective when that is one, else
    the first scorer's primary metric; None without scorers."""
    from trainables.scoring import primary_metric

    if sweep.metric.startswith("task_"):
        return sweep.metric
    scorers = (sweep.config.get("evaluation") or {}).get("scorers") or []
    return primary_metric(scorers[0]) if scorers else None


def rank_correlation(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rho (average ranks for ties); None for fewer than 3 pairs or no variation."""
    if len(xs) < 3:
        return None

    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return None if not sxx or not syy else sxy / math.sqrt(sxx * syy)


def loss_vs_task_figure(sweep: SweepDir):
    """Every evaluation of every trial as a point: eval loss against the task metric, the
    winner's in colour, the constant answer's task metric as a line. ``(figure, rho)``, rho
    the rank correlation of the two over the evaluations; None when there is nothing to plot."""
    metric = task_metric(sweep)
    if metric is None:
        return None
    points, winner = [], []
    best = (sweep.best or {}).get("trial_id")
    for row in sweep.leaderboard():
        for h in sweep.history(row["trial_id"]):
            if _finite(h.get("eval_loss")) and _finite(h.get(metric)):
                (winner if row["trial_id"] == best else points).append((h["eval_loss"], h[metric]))
    if not points and not winner:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if points:
        ax.scatter(*zip(*points), color="0.6", s=18, label="other trials' evaluations")
    if winner:
        ax.scatter(*zip(*winner), color="C0", s=30, label=f"winner (trial {best})")
    constant = (((sweep.baseline or {}).get("constant_reference") or {}).get("metrics")
                or {}).get(metric)
    if _finite(constant):
        ax.axhline(constant, color="C2", linestyle="-.", linewidth=1, label="constant answer")
    both = points + winner
    rho = rank_correlation([x for x, _ in both], [y for _, y in both])
    ax.set_xlabel("eval_loss")
    ax.set_ylabel(metric)
    ax.set_title(f"{sweep.name}: eval loss against {metric}"
                 + (f" (rank correlation {rho:+.2f})" if rho is not None else ""))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig, rho
