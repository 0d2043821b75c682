"""Unit tests of the pure functions the sweep is built on, with no Ray, no model and no
subprocess: the promotion verdict, improvement parsing, leaderboard rows and ordering, ASHA's
rungs, override parsing, error summaries, the task verdict and the untrusted-adapter rule.
They run in the fast tier (``make test-fast``)."""

from __future__ import annotations

import math

import pytest

from orchestrator.config.schema import parse_improvement
from orchestrator.errors import UserError
from orchestrator.config.loading import apply_overrides
from orchestrator.promotion.promote import judge as promotion_judge
from orchestrator.sweepdir.results import best_first, error_summary, leaderboard_cells, render_table
from orchestrator.config.rules import asha_rungs
from orchestrator.promotion.untrusted import check_adapter_weights, download_patterns
from orchestrator.observe.verdict import fmt, judge as task_judge, render

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("value, expected", [
    (0.02, (0.02, "absolute")), ("0.02", (0.02, "absolute")), ("2%", (0.02, "relative")),
    (0, (0.0, "absolute")), ("0%", (0.0, "relative")),
])
def test_improvement_parsing(value, expected):
    number, kind = parse_improvement(value)
    assert (pytest.approx(number), kind) == (expected[0], expected[1])


@pytest.mark.parametrize("value", ["-1", "two", "-5%", "%"])
def test_improvement_parsing_rejects(value):
    with pytest.raises(ValueError):
        parse_improvement(value)


def test_promotion_verdict():
    # lower is better: a smaller loss wins when it clears the bar
    assert promotion_judge(0.9, 1.0, mode="min", min_improvement=0)[0]
    assert promotion_judge(0.9, 1.0, mode="min", min_improvement=0.1)[0]
    assert not promotion_judge(0.95, 1.0, mode="min", min_improvement=0.1)[0]
    assert promotion_judge(0.9, 1.0, mode="min", min_improvement="10%")[0]
    assert not promotion_judge(0.91, 1.0, mode="min", min_improvement="10%")[0]
    # a tie never wins, even with no bar; higher is better in max mode
    assert not promotion_judge(1.0, 1.0, mode="min", min_improvement=0)[0]
    assert promotion_judge(0.8, 0.7, mode="max", min_improvement=0)[0]
    assert not promotion_judge(0.6, 0.7, mode="max", min_improvement=0)[0]
    wins, why = promotion_judge(0.5, 1.0, mode="min", min_improvement="2%")
    assert wins and "+50.00%" in why and "2.00% relative" in why
    # a champion of exactly 0: any gain is an infinite relative improvement
    assert promotion_judge(-0.1, 0.0, mode="min", min_improvement="50%")[0]


def _row(trial, value, *, subset=None, status="completed", **extra):
    return {"trial_id": trial, "best_eval_loss": value, "subset_value": subset, "status": status,
            "best_step": 10, "steps_run": 20, **extra}


def test_leaderboard_order_puts_whole_set_values_first():
    rows = [_row("c", None), _row("b", None, subset=0.1), _row("a", 2.0), _row("d", 1.0)]
    ordered = sorted(rows, key=lambda r: best_first(r, metric="eval_loss", mode="min"))
    assert [r["trial_id"] for r in ordered] == ["d", "a", "b", "c"]
    ordered = sorted(rows, key=lambda r: best_first(r, metric="eval_loss", mode="max"))
    assert [r["trial_id"] for r in ordered] == ["a", "d", "b", "c"]


def test_leaderboard_cells_and_references():
    rows = [_row("a", 1.5, **{"lora.r": 8, "task_price_mae": 40.0}),
            _row("b", None, subset=2.5, status="stopped_early", rung=10, retries=2,
                 **{"lora.r": 16}),
            _row("c", None, status="errored", error="TrainingDiverged: loss is nan",
                 **{"lora.r": 4})]
    baseline = {"eval_loss": 2.0, "task_price_mae": 200.0,
                "constant_reference": {"metrics": {"task_price_mae": 150.0}}}
    header, table = leaderboard_cells(rows, metric="eval_loss", searched=["lora.r"],
                                      baseline=baseline)
    assert header[:4] == ["#", "trial", "status", "r"] and "price_mae" in header
    assert table[0][2] == "completed" and table[0][header.index("vs base")] == "-25.0%"
    assert table[1][2] == "stopped early at step 10 (2 restarts)"
    assert table[1][header.index("best eval_loss")] == "2.5 (subset)"
    assert table[2][2].startswith("errored: TrainingDiverged")
    assert table[3][1:3] == ["base model", "baseline"]
    assert table[4][1:3] == ["constant answer", "reference"]
    assert table[4][header.index("price_mae")] == "150"
    text = render_table(rows, metric="eval_loss", searched=["lora.r"], baseline=baseline)
    assert len(text.splitlines()) == 2 + 5


@pytest.mark.parametrize("grace, max_t, factor, rungs", [
    (10, 80, 2, [10, 20, 40, 80]), (60, 240, 2, [60, 120, 240]), (5, 45, 3, [5, 15, 45]),
    (10, 10, 2, [10]),
])
def test_asha_rungs(grace, max_t, factor, rungs):
    assert asha_rungs(grace, max_t, factor) == rungs


def test_overrides_are_typed_and_search_space_names_stay_dotted():
    data = apply_overrides({"search": {"num_trials": 4}}, [
        "search.num_trials=16", "lora.target_modules=[q_proj,v_proj]",
        "search_space.lora.r={choice: [8, 16]}", "training.learning_rate=3e-4",
        "storage.name="])
    assert data["search"]["num_trials"] == 16
    assert data["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert data["search_space"] == {"lora.r": {"choice": [8, 16]}}
    assert float(data["training"]["learning_rate"]) == 3e-4  # the schema makes it a float
    assert data["storage"]["name"] is None
    with pytest.raises(UserError) as err:
        apply_overrides({}, ["search.num_trials"])
    assert "not key=value" in str(err.value.problems)


def test_error_summary_is_the_last_line_without_the_module_path():
    wrapped = ("ray.exceptions.RayTaskError(TrainingDiverged): ...\n  File x\n\n"
               "trainables.callbacks.TrainingDiverged: loss is nan at step 7\n")
    assert error_summary(wrapped) == "TrainingDiverged: loss is nan at step 7"
    assert error_summary(None) == ""
    assert error_summary(ValueError("")) == "ValueError"
    assert len(error_summary("x" * 1000)) == 300


SCORER = [{"type": "number", "name": "price", "pattern": r"\$(\d+)"}]


def _baseline(constant_mae, *, distinct_references=40):
    return {"task_price_mae": 200.0, "task_distinct": 30, "task_samples": 80,
            "task_reference_distinct": distinct_references,
            "constant_reference": {"metrics": {"task_price_mae": constant_mae, "task_distinct": 1},
                                   "answers": {"price": "Price is $81.00"}}}


def test_task_verdict_beats_the_constant_with_varied_answers():
    verdict = task_judge(winner={"task_price_mae": 50.0, "task_distinct": 45},
                         baseline=_baseline(150.0), scorers=SCORER)
    assert verdict["beats_constant"] and not verdict["collapsed"] and not verdict["warnings"]
    assert verdict["rows"]["constant answer"]["task_price_mae"] == 150.0
    assert render(verdict).splitlines()[-1].startswith("the winner beats the constant answer")


def test_task_verdict_names_a_collapsed_winner_worse_than_the_constant():
    verdict = task_judge(winner={"task_price_mae": 170.0, "task_distinct": 1},
                         baseline=_baseline(150.0), scorers=SCORER)
    assert not verdict["beats_constant"] and verdict["collapsed"]
    text = render(verdict)
    assert "does not beat the constant answer on task_price_mae" in text
    assert "'Price is $81.00'" in text and "collapse: 1 distinct answer(s) to 80" in text
    assert task_judge(winner={}, baseline={}, scorers=[]) is None


def test_task_metric_cells():
    assert fmt(None) == "-" and fmt(math.nan) == "-" and fmt(46.3519) == "46.35"


def test_a_pickle_only_adapter_needs_consent():
    check_adapter_weights(["adapter_config.json", "adapter_model.safetensors"], "x",
                          allow_pickle=False)
    check_adapter_weights(["adapter_model.safetensors", "adapter_model.bin"], "x",
                          allow_pickle=False)
    check_adapter_weights(["sub/adapter_model.bin"], "x", allow_pickle=True)
    with pytest.raises(UserError) as err:
        check_adapter_weights(["adapter_config.json", "sub/adapter_model.bin"], "acme/a",
                              allow_pickle=False)
    assert "acme/a" in str(err.value) and "--allow-pickle" in str(err.value)
    safe = download_patterns(False)
    assert "*.bin" in safe["ignore_patterns"] and "adapter_model.bin" not in safe["allow_patterns"]
    opted = download_patterns(True)
    assert "adapter_model.bin" in opted["allow_patterns"] and "*.bin" not in opted["ignore_patterns"]
    assert "*.pkl" in opted["ignore_patterns"]


def test_a_benchmark_result_replaces_the_older_one_of_the_same_figure():
    from benchmarks.report import merge, sections

    page = "# Benchmarks\n\nintro\n\n## Scale (run 1)\n\nold\n\n## Packing\n\np\n"
    page = merge(page, "Scale (run 2)", "## Scale (run 2)\n\nnew\n")
    assert [title for title, _ in sections(page)[1]] == ["Scale (run 2)", "Packing"]
    assert "old" not in page and "new" in page and page.startswith("# Benchmarks\n\nintro")
    page = merge(page, "Memory", "## Memory\n\nm\n")
    assert [title for title, _ in sections(page)[1]] == ["Scale (run 2)", "Packing", "Memory"]


def test_lora_alpha_is_given_or_ratio_times_r():
    from trainables.lora import lora_alpha

    assert lora_alpha({"alpha": 32, "alpha_ratio": 2.0, "r": 8}) == 32.0
    assert lora_alpha({"alpha": None, "alpha_ratio": 2.0, "r": 8}) == 16.0
    assert lora_alpha({"alpha_ratio": 0.5, "r": 16}) == 8.0


def test_the_sweep_plan_is_built_once_and_frozen(tmp_path):
    import dataclasses

    from orchestrator.config.loading import load_config
    from tests.conftest import write_config

    cfg, plan = load_config(write_config(tmp_path / "s.yaml"))
    assert plan.config_path == str((tmp_path / "s.yaml").resolve()) and plan.mode == "min"
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.mode = "max"


def test_json_the_sweep_writes_is_strict():
    import json

    from orchestrator.sweepdir.results import strict_dumps, vs_base

    text = strict_dumps({"train_loss": float("nan"), "rows": [{"v": float("inf")}, 1.5]})
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in strict JSON")) == {
        "train_loss": None, "rows": [{"v": None}, 1.5]}
    assert vs_base(1.5, 2.0) == "-25.0%" and vs_base(None, 2.0) == "-" and vs_base(1.0, 0) == "-"
