"""The search replay (benchmarks/search_replay.py): recorded curves, the project's own searcher
and ASHA on a simulated clock; the same decisions as Ray Tune running the same search."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from benchmarks import curve_table
from benchmarks.replay_engine import Lookup, replay, through_ray
from benchmarks.search_replay import signed_rank_p
from orchestrator.config.loading import load_config

from .conftest import ROOT


def _smoke(smoke_sweep, *overrides):
    return load_config(smoke_sweep.path / "sweep.yaml", list(overrides), existing=True)


def test_a_finished_sweep_dir_is_a_table_and_round_trips(smoke_sweep, tmp_path):
    table = curve_table.read(smoke_sweep.path)
    assert table.keys == ["lora.target_modules", "training.learning_rate"]
    assert {"eval_loss", "eval_mean_token_accuracy"} <= set(table.metrics)
    # every trial that reported (the NaN trial errored before its first evaluation) is a
    # run; trials with the same settings (TPE may propose one again) share a configuration
    reported = [t for t in smoke_sweep.path.glob("trial_*") if (t / "progress.csv").is_file()]
    settings = {(t / "params.json").read_text() for t in reported}
    assert len(table.runs) == len(table.configs()) == len(settings) >= 3
    assert {r.seed for r in table.runs} == {_smoke(smoke_sweep)[0].training.seed}
    path = tmp_path / "curves.csv"
    table.write(path)
    again = curve_table.read(path)
    assert again.keys == table.keys and again.metrics == table.metrics
    for a, b in zip(sorted(table.runs, key=lambda r: r.config),
                    sorted(again.runs, key=lambda r: r.config)):
        assert a.steps == b.steps and a.seed == b.seed
        assert [round(v, 4) for v in a.metrics["eval_loss"] if not math.isnan(v)] == \
            [round(v, 4) for v in b.metrics["eval_loss"] if not math.isnan(v)]


def test_a_replay_is_deterministic_for_a_seed(smoke_sweep):
    cfg, plan = _smoke(smoke_sweep, "search.num_trials=12")
    lookup = Lookup(curve_table.read(smoke_sweep.path))
    first = replay(cfg, plan, lookup, seed=3, max_spent=240, concurrency=2)
    again = replay(cfg, plan, lookup, seed=3, max_spent=240, concurrency=2)
    assert first == again
    assert first.curve and first.curve[-1][0] >= 240 or len(first.trials) == 12
    # spent steps never go down; ASHA stopped some trials at its rungs (10, 20)
    assert all(a[0] <= b[0] for a, b in zip(first.curve, first.curve[1:]))
    assert any(last < 30 for _, _, last in first.trials)


def test_the_replay_makes_the_decisions_ray_tune_makes(smoke_sweep, tmp_path):
    """One trial at a time (so the order is Ray's, not the machine's): which configuration
    each trial got and where ASHA stopped it, through Ray Tune and through the replay."""
    cfg, plan = _smoke(smoke_sweep, "search.num_trials=8", "resources.gpu=0")
    lookup = Lookup(curve_table.read(smoke_sweep.path))
    simulated = replay(cfg, plan, lookup, seed=None, max_spent=10**9, concurrency=1)
    real = through_ray(cfg, plan, lookup, root=str(tmp_path))
    assert len(real) == 8
    assert simulated.trials == real


def test_the_signed_rank_test():
    assert signed_rank_p([1.0] * 20) < 1e-4  # every pair better
    assert signed_rank_p([-1.0] * 20) > 0.999
    assert 0.3 < signed_rank_p([1, -1, 2, -2, 3, -3, 4, -4]) < 0.7
    assert signed_rank_p([0, 0, 0]) == 1.0


def test_search_replay_prints_one_summary_line(smoke_sweep):
    proc = subprocess.run(
        [sys.executable, "benchmarks/search_replay.py", "--table", str(smoke_sweep.path),
         "--config", str(smoke_sweep.path / "sweep.yaml"), "--replays", "4",
         "--budget", "60", "--arms", "random-asha,tpe-ray,tpe-mv", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = proc.stdout.strip().splitlines()
    summary = json.loads(line)
    from benchmarks.search_replay import DEFAULT_ARM

    assert summary["default"] == DEFAULT_ARM and summary["replays"] == 4
    assert set(summary["arms"]) == {"random", "random-asha", "tpe-ray", "tpe-mv"}
    for arm in summary["arms"].values():
        assert 0 <= arm["share_at_least_random"] <= 1 and 0 <= arm["p_better_than_random"] <= 1
        assert arm["reached_top5"] <= 4
