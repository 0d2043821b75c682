"""Learning-curve tables: what a sweep's trials reported, one row per configuration, seed and step.

The format (CSV, a header row, then one row per evaluation of one trial)::

    config,seed,step,time_s,<searched setting>...,<metric>...

* ``config``: an id shared by the rows of one configuration (the same settings, any seed);
* ``seed``: ``training.seed`` of that run (repeats of a configuration differ only here);
* ``step``: the training step of the evaluation; ``time_s``: the trial's training time at it;
* one column per searched setting, named as in the sweep config's ``search_space``
  (``lora.r``, ``training.learning_rate``, ...), written as the config writes them
  (``all-linear``; a list of modules as ``q_proj+v_proj``);
* one column per reported metric, named as the sweep reports it (``eval_loss``,
  ``task_price_mae``, ...); empty where the evaluation did not report it (a diverged trial).

:func:`read` takes such a table or a finished sweep dir (its ``trial_*/params.json`` and
``progress.csv``: every trial becomes a configuration of its own unless its settings repeat
another's), so a replay runs on any task a sweep has run.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

META = ("config", "seed", "step", "time_s")
# Reported columns that are bookkeeping, not metrics.
_NOT_METRICS = {"step", "training_iteration", "time_total_s", "time_this_iter_s", "timestamp",
                "time_since_restore", "iterations_since_restore", "done", "pid", "date",
                "hostname", "node_ip", "trial_id", "checkpoint_dir_name", "should_checkpoint",
                "experiment_tag", "search_value", "epoch", "eval_runtime",
                "eval_samples_per_second", "eval_steps_per_second", "peak_memory_mb",
                "eval_perplexity", "task_seconds", "task_examples", "eval_samples"}


@dataclass
class Run:
    """One configuration trained with one seed: its settings and its curve."""

    config: int
    seed: int
    settings: dict
    steps: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)

    def value(self, metric: str, i: int) -> float:
        v = self.metrics.get(metric, [math.nan] * len(self.steps))[i]
        return v


@dataclass
class Table:
    """Every recorded run; ``keys``: the searched settings, ``metrics``: the reported ones."""

    keys: list[str]
    metrics: list[str]
    runs: list[Run]

    def configs(self) -> dict[int, list[Run]]:
        out: dict[int, list[Run]] = {}
        for run in self.runs:
            out.setdefault(run.config, []).append(run)
        return out

    def write(self, path: Path) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([*META, *self.keys, *self.metrics])
            for run in sorted(self.runs, key=lambda r: (r.config, r.seed)):
                for i, step in enumerate(run.steps):
                    w.writerow([run.config, run.seed, step, f"{run.times[i]:.1f}",
                                *[_cell(run.settings[k]) for k in self.keys],
                                *[_num(run.value(m, i)) for m in self.metrics]])


def _cell(value) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _num(value: float) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.6g}"


def _parse(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read(path: Path) -> Table:
    """A table file, or a finished sweep dir (a folder holding ``trial_*``)."""
    path = Path(path)
    if path.is_dir():
        return from_sweep(path)
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        if tuple(header[:len(META)]) != META:
            raise ValueError(f"{path}: not a learning-curve table (the header begins "
                             f"{header[:4]}, expected {list(META)})")
        keys = [h for h in header[len(META):] if "." in h]
        metrics = header[len(META) + len(keys):]
        runs: dict[tuple[int, int], Run] = {}
        for row in reader:
            config, seed, step, time_s = int(row[0]), int(row[1]), int(row[2]), float(row[3])
            settings = {k: _parse(v) for k, v in zip(keys, row[4:4 + len(keys)])}
            run = runs.setdefault((config, seed), Run(config, seed, settings))
            run.steps.append(step)
            run.times.append(time_s)
            for m, v in zip(metrics, row[4 + len(keys):]):
                run.metrics.setdefault(m, []).append(float(v) if v else math.nan)
    return Table(keys, metrics, list(runs.values()))


def from_sweep(sweep: Path) -> Table:
    return from_sweeps([sweep])


def from_sweeps(sweeps: list[Path]) -> Table:
    """Finished sweeps' trials as one table: the searched settings (``params.json``'s keys),
    ``training.seed`` as the seed (searched, or the sweep's own), every evaluation metric of
    ``progress.csv`` at the rows that carry an evaluation. Trials with the same settings
    share a configuration id; a second trial with the same settings and seed is left out."""
    trials, seeds = [], []
    for sweep in map(Path, sweeps):
        found = sorted(p for p in sweep.glob("trial_*")
                       if (p / "params.json").is_file() and (p / "progress.csv").is_file())
        if not found:
            raise ValueError(f"{sweep}: no trial_*/params.json with a progress.csv here; is "
                             f"this a sweep dir?")
        trials += found
        seeds += [_sweep_seed(sweep)] * len(found)
    params = [json.loads((t / "params.json").read_text()) for t in trials]
    seed_key = "training.seed"
    keys = sorted({k for p in params for k in p if k != seed_key})
    rows_of = []
    metrics: list[str] = []
    for t in trials:
        with open(t / "progress.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("step")]
        rows_of.append(rows)
        for r in rows:
            for k, v in r.items():
                if k not in _NOT_METRICS and k not in metrics and _is_number(v) and (
                        k.startswith("eval_") or k.startswith("task_")):
                    metrics.append(k)
    ids: dict[tuple, int] = {}
    runs, taken = [], set()
    for p, rows, default_seed in zip(params, rows_of, seeds):
        settings = {k: p.get(k) for k in keys}
        ident = tuple(_cell(settings[k]) for k in keys)
        config = ids.setdefault(ident, len(ids))
        run = Run(config, int(p.get(seed_key, default_seed)), settings)
        if (config, run.seed) in taken:  # the same training again (TPE may propose it twice)
            continue
        evals = [r for r in rows if any(_is_number(r.get(m)) for m in metrics)]
        t0 = 0.0
        for r in evals:
            run.steps.append(int(float(r["step"])))
            run.times.append(float(r.get("time_total_s") or t0))
            for m in metrics:
                v = r.get(m)
                run.metrics.setdefault(m, []).append(float(v) if _is_number(v) else math.nan)
        if run.steps:
            runs.append(run)
            taken.add((config, run.seed))
    return Table(keys, metrics, runs)


def _sweep_seed(sweep: Path) -> int:
    try:
        import yaml

        cfg = yaml.safe_load((sweep / "sweep.yaml").read_text())
        return int(cfg.get("training", {}).get("seed", 42))
    except (OSError, ValueError, AttributeError):
        return 42


def _is_number(v) -> bool:
    if v in (None, ""):
        return False
    try:
        return math.isfinite(float(v)) or True
    except (TypeError, ValueError):
        return False
