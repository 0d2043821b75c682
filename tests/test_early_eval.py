"""``scheduler.early_eval_samples``: early rungs rank trials on a fixed eval subset, and whole-set
metrics never mix with subset ones."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from orchestrator.config.schema import SweepConfig
from orchestrator.config.rules import check_rules
from trainables.early_eval import subset_indices
from trainables.trial import run_trial

from .conftest import EXAMPLES, cli, write_config
from .test_trainable import tiny_spec


def test_subset_is_fixed_by_the_seed_and_spread_over_the_eval_set():
    a, b = subset_indices(80, 20, seed=0), subset_indices(80, 20, seed=0)
    assert a == b == sorted(set(a)) and len(a) == 20 and a[-1] > 40
    assert subset_indices(80, 20, seed=1) != a
    assert subset_indices(10, 20, seed=0) == list(range(10))  # more asked than there are


def test_subset_evaluations_change_what_is_evaluated_and_nothing_else(tmp_path):
    early = {"samples": 8, "full_from": 20, "metric": "eval_loss", "seed": 0}
    plain = run_trial(tiny_spec(), output_dir=tmp_path / "plain")  # 20 steps
    history = run_trial(tiny_spec().replace(early_eval=early), output_dir=tmp_path / "early")
    assert [h["step"] for h in history] == [10, 20]
    first, *later = history
    # Step 10, before the last stopping rung: the subset, under search_value only.
    assert first["eval_samples"] == 8
    assert all(math.isnan(first[k]) for k in ("eval_loss", "eval_perplexity",
                                              "eval_mean_token_accuracy"))
    assert math.isfinite(first["search_value"])
    assert first["search_value"] != pytest.approx(plain[0]["eval_loss"], abs=1e-6)
    # From step 20: the whole eval set, the metric and search_value agree, and the training
    # (same seed) went exactly as without the subset.
    for h, p in zip(later, plain[1:]):
        assert h["eval_samples"] == p["eval_samples"] == 32
        assert h["search_value"] == h["eval_loss"] == pytest.approx(p["eval_loss"], rel=1e-6)
        assert h["train_loss"] == pytest.approx(p["train_loss"], rel=1e-6)


def _derive(**scheduler):
    cfg = SweepConfig.model_validate({
        "training": {"max_steps": 160, "eval_steps": 20},
        "scheduler": {"grace_period": 20, "reduction_factor": 2, **scheduler},
        "data": {"train": str(EXAMPLES / "data/pricing_train.jsonl"), "max_eval_samples": 64},
        "search_space": {"lora.r": {"choice": [8, 16]}},
    })
    return check_rules(cfg, base_dir=Path("."))


def test_full_evaluations_start_at_the_last_stopping_rung():
    derived, problems = _derive(early_eval_samples=16)
    assert not problems
    assert derived.full_eval_from == 80  # rungs 20, 40, 80 stop trials; 160 ends them
    assert derived.rank_key == "search_value"
    plain, _ = _derive()
    assert plain.full_eval_from is None and plain.rank_key == "eval_loss"


@pytest.mark.parametrize("scheduler, expected", [
    ({"type": "none"}, "only serves ASHA's early rungs"),
    ({"early_eval_samples": 64}, "not below data.max_eval_samples = 64"),
    ({"grace_period": 160}, "ASHA has no rung before the end"),
])
def test_early_eval_rules(scheduler, expected):
    _, problems = _derive(**{"early_eval_samples": 16, **scheduler})
    assert any(expected in p and "Fix:" in p for p in problems), problems


def test_a_sweep_ranks_early_rungs_on_the_subset(tmp_path, tiny_model_dir):
    """A real sweep: ASHA stops the poor trial on its subset value at rung 10; the leaderboard,
    best.json and the Optuna study see whole-set values where there are any."""
    config = write_config(
        tmp_path / "early.yaml",
        data={"max_eval_samples": 40},
        training={"max_steps": 30, "eval_steps": 10, "max_grad_norm": 0.0},
        search_space={"training.learning_rate": {"choice": [3e-3, 2e-3, 1e-6]}},
        # One at a time: one worker process for the three trials (Ray reuses it).
        search={"algorithm": "optuna", "num_trials": 3, "max_concurrent": 1, "seed": 1,
                "initial_points": [{"training.learning_rate": 3e-3},
                                   {"training.learning_rate": 2e-3},
                                   {"training.learning_rate": 1e-6}]},
        scheduler={"type": "asha", "grace_period": 10, "reduction_factor": 2,
                   "early_eval_samples": 10},
        lora={"target_modules": "attention"},
        storage={"path": str(tmp_path / "sweeps"), "name": "early"},
    )
    proc = cli("run", str(config), timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    sweep = tmp_path / "sweeps" / "early"

    rows = {r["trial_id"]: r for r in csv.DictReader(open(sweep / "leaderboard.csv"))}
    poor = [r for r in rows.values() if float(r["training.learning_rate"]) == 1e-6]
    assert [r["status"] for r in poor] == ["stopped_early"]  # ASHA ranked on search_value
    assert poor[0]["best_eval_loss"] == "" and float(poor[0]["subset_value"]) > 0
    assert "(subset)" in out
    for trial_id, row in rows.items():
        reports = list(csv.DictReader(open(sweep / f"trial_{trial_id}" / "progress.csv")))
        for rep in reports:
            step, n = int(rep["step"]), int(rep["eval_samples"])
            assert n == (10 if step < 20 else 40), rep
            assert math.isnan(float(rep["eval_loss"])) == (step < 20)
            if step >= 20:
                assert float(rep["eval_loss"]) == float(rep["search_value"])

    # status (from status.json) shows the stopped trial's subset value apart, too.
    listed = json.loads(cli("status", str(sweep), "--format", "json").stdout)["trials"]
    stopped = next(t for t in listed if t["trial_id"] == poor[0]["trial_id"])
    assert stopped["best_eval_loss"] is None
    assert stopped["subset_value"] == pytest.approx(float(poor[0]["subset_value"]))
    assert listed[-1] is stopped
    assert "(subset)" in cli("status", str(sweep)).stdout

    # The curves plot the subset evaluations dotted: the stopped trial shows there only.
    from orchestrator.observe.plots import curve_figure
    from orchestrator.sweepdir.folder import open_sweep

    fig = curve_figure(open_sweep(sweep))
    dotted = [line for line in fig.axes[0].get_lines()
              if line.get_linestyle() == ":" and len(line.get_xdata())]
    assert len(dotted) == 3  # every trial evaluated on the subset at step 10
    assert any(list(line.get_xdata()) == [10]
               and line.get_ydata()[0] == pytest.approx(float(poor[0]["subset_value"]))
               for line in dotted)
    solid = [line for line in fig.axes[0].get_lines()
             if line.get_linestyle() == "-" and len(line.get_xdata())]
    assert all(min(line.get_xdata()) >= 20 for line in solid)

    best = json.loads((sweep / "best.json").read_text())
    assert best["step"] >= 20 and math.isfinite(best["value"])
    assert float(rows[best["trial_id"]]["best_eval_loss"]) == best["value"]

    # The Optuna study was told each trial's value: whole-set for trials that got that far,
    # the subset value for the one ASHA stopped at rung 10.
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(sweep / "optuna.journal")))
    study = optuna.load_study(study_name="early", storage=storage)
    values = {t.number: t.value for t in study.trials}
    assert len(values) == 3 and all(v is not None and math.isfinite(v) for v in values.values())
