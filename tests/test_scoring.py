"""The built-in scorers, the constant-answer reference and the verdict, on hand-made answers."""

from __future__ import annotations

import math

import pytest

from orchestrator.observe.verdict import judge, render
from trainables.scoring import (ScorerError, collapsed, constant_answer, constant_reference,
                                extract_number, metric_modes, score, score_all)

pytestmark = pytest.mark.fast

PRICE = {"type": "number", "name": "price", "pattern": r"\$\s*([0-9][0-9,]*\.?[0-9]*)",
         "tolerance": "10%"}
REFS = ["Price is $100.00", "Price is $200.00", "Price is $1,000.00"]


def test_exact_match_normalises_whitespace():
    got = score({"type": "exact_match"}, ["Price is  $100.00 ", "Price is $201.00", ""], REFS)
    assert got == {"task_exact_match": pytest.approx(1 / 3)}


def test_contains():
    got = score({"type": "contains"}, ["I think Price is $100.00.", "no", "Price is $1,000.00"], REFS)
    assert got == {"task_contains": pytest.approx(2 / 3)}


def test_number_metrics_and_unparseable_predictions_count_as_zero():
    got = score(PRICE, ["Price is $110.00", "about two hundred", "Price is $1,000"], REFS)
    # MAE: |110-100| + |0-200| (unparseable counts as 0) + 0, over 3
    assert got["task_price_mae"] == pytest.approx((10 + 200 + 0) / 3)
    assert got["task_price_hit"] == pytest.approx(2 / 3)  # 110 is within 10 % of 100
    assert got["task_price_parsed"] == pytest.approx(2 / 3)
    expected = math.sqrt(((math.log1p(110) - math.log1p(100)) ** 2 + math.log1p(200) ** 2) / 3)
    assert got["task_price_rmsle"] == pytest.approx(expected)


def test_number_absolute_tolerance_and_default_pattern():
    spec = {"type": "number", "tolerance": 5}
    got = score(spec, ["104", "x 300", "-"], ["100", "200", "7"])
    assert got["task_number_hit"] == pytest.approx(1 / 3)
    assert extract_number("it costs 1,234.5 dollars") == 1234.5
    assert extract_number("no number") is None


def test_label_accuracy():
    spec = {"type": "label", "labels": ["positive", "negative", "neutral"]}
    got = score(spec, ["Positive, clearly", "neutral.", "I don't know"],
                ["positive", "negative", "neutral"])
    assert got == {"task_label_accuracy": pytest.approx(1 / 3)}
    # Without labels: the first word.
    assert score({"type": "label"}, ["Yes, it is", "no"], ["yes", "yes"]) == {
        "task_label_accuracy": 0.5}


def test_custom_scorer(tmp_path):
    (tmp_path / "my_scorers.py").write_text(
        "def length_ratio(predictions, references):\n"
        "    return {'ratio': sum(map(len, predictions)) / sum(map(len, references)),\n"
        "            'count': len(predictions)}\n"
        "def broken(predictions, references):\n"
        "    raise ValueError('boom')\n"
        "def wrong_type(predictions, references):\n"
        "    return 3.0\n")
    spec = {"type": "custom", "function": "my_scorers:length_ratio",
            "metrics": {"ratio": "max", "count": "max"}}
    got = score(spec, ["ab", "cd"], ["abcd", "abcd"], search_path=[str(tmp_path)])
    assert got == {"task_length_ratio_ratio": 0.5, "task_length_ratio_count": 2.0}
    assert list(metric_modes(spec)) == ["task_length_ratio_ratio", "task_length_ratio_count"]
    with pytest.raises(ScorerError, match="raised ValueError: boom"):
        score({**spec, "function": "my_scorers:broken"}, ["a"], ["b"],
              search_path=[str(tmp_path)])
    with pytest.raises(ScorerError, match="returned a float"):
        score({**spec, "function": "my_scorers:wrong_type"}, ["a"], ["b"],
              search_path=[str(tmp_path)])
    with pytest.raises(ScorerError, match="no 'missing'"):
        score({**spec, "function": "my_scorers:missing"}, ["a"], ["b"],
              search_path=[str(tmp_path)])
    with pytest.raises(ScorerError, match="cannot import module 'no_such_module'"):
        score({**spec, "function": "no_such_module:f"}, ["a"], ["b"])


def test_a_scorer_module_that_was_missing_is_imported_once_it_arrives(tmp_path):
    """A failed import is not remembered: a reused worker whose scorer module (or its whole
    folder) was missing at one trial imports it at the next, once it is there."""
    from trainables.scoring import ScorerImportError

    folder = tmp_path / "shipped_later"  # not there yet, as on a node without the driver's files
    spec = {"type": "custom", "function": "late_scorers:answered", "metrics": {"n": "max"}}
    with pytest.raises(ScorerImportError, match="cannot import module 'late_scorers'"):
        score(spec, ["a"], ["b"], search_path=[str(folder)])
    folder.mkdir()
    (folder / "late_scorers.py").write_text(
        "def answered(predictions, references):\n    return {'n': len(predictions)}\n")
    assert score(spec, ["a"], ["b"], search_path=[str(folder)]) == {"task_answered_n": 1.0}


def test_constant_answer_is_the_median_for_numbers_else_the_most_common():
    completions = ["Price is $10.00", "Price is $30.00", "Price is $20.00", "Price is $30.00"]
    assert constant_answer(PRICE, completions) == "Price is $20.00"  # the lower median
    assert constant_answer({"type": "exact_match"}, completions) == "Price is $30.00"
    ref = constant_reference([PRICE], completions, REFS)
    assert ref["answers"] == {"price": "Price is $20.00"}
    assert ref["metrics"]["task_price_mae"] == pytest.approx((80 + 180 + 980) / 3)
    assert ref["metrics"]["task_distinct"] == 1.0


def test_distinct_and_collapse():
    got = score_all([PRICE], ["Price is $1.00"] * 9 + ["Price is $2.00"], ["x"] * 10)
    assert got["task_distinct"] == 2.0
    assert collapsed(1, distinct_references=60)
    assert not collapsed(12, distinct_references=60)
    # References that are themselves a few labels: two distinct answers are not a collapse.
    assert not collapsed(2, distinct_references=2)


def test_verdict_says_when_the_winner_only_learned_the_format():
    baseline = {"task_price_mae": 300.0, "task_distinct": 1.0, "task_samples": 80,
                "task_reference_distinct": 70,
                "constant_reference": {"metrics": {"task_price_mae": 150.0, "task_distinct": 1.0},
                                       "answers": {"price": "Price is $117.60"}}}
    bad = judge(winner={"task_price_mae": 160.0, "task_distinct": 1.0}, baseline=baseline,
                scorers=[PRICE])
    assert not bad["beats_constant"] and bad["collapsed"]
    text = render(bad)
    assert "does not beat the constant answer on task_price_mae" in text
    assert "'Price is $117.60'" in text and "collapse: 1 distinct answer" in text
    good = judge(winner={"task_price_mae": 60.0, "task_distinct": 25.0}, baseline=baseline,
                 scorers=[PRICE])
    assert good["beats_constant"] and not good["collapsed"] and not good["warnings"]
    assert good["rows"]["constant answer"]["task_price_mae"] == 150.0
    assert judge(winner={}, baseline=baseline, scorers=[]) is None


def test_rank_correlation():
    from orchestrator.observe.plots import rank_correlation

    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))  # ties: mean ranks
    assert rank_correlation([1, 2], [2, 1]) is None
    assert rank_correlation([1, 1, 1], [1, 2, 3]) is None
