"""Verdicts that know noise, on hand-made per-item values (no model, no sweep): the paired
bootstrap, per-item values whose means are the task metrics, "beats the constant answer" and
the promotion gate judged by it, collapse judged against the references, and the winner rule
when the best two trials are within noise. (The same fields in a real sweep's outputs:
tests/test_task_metrics.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.observe.paired import BETTER, NOISE, WORSE, compare, compare_records, sentence
from orchestrator.observe.verdict import judge, render
from orchestrator.observe import winner
from orchestrator.promotion.gate import decide
from trainables.items import ITEMS, digest, item_values, record
from trainables.scoring import collapse_floor, collapsed, score

pytestmark = pytest.mark.fast

PRICE = {"type": "number", "name": "price", "pattern": r"\$\s*([0-9][0-9,]*\.?[0-9]*)"}
RNG = np.random.default_rng(27)
TRUTH = RNG.uniform(20, 600, 80).round()  # 80 held-out prices, as in the demo
REFERENCES = [f"Price is ${v:.2f}" for v in TRUTH]
CONSTANT = np.abs(TRUTH - 250.0)  # always answering the training median: errors ~150


def _noisy(scale: float, noise: float, seed: int) -> np.ndarray:
    """Per-item absolute errors: the constant answer's, each times a random factor (spread
    ``noise``), rescaled so that their mean is exactly ``scale`` times the constant answer's."""
    factors = np.random.default_rng(seed).lognormal(0.0, noise, len(CONSTANT))
    errors = CONSTANT * factors
    return errors * (scale * CONSTANT.mean() / errors.mean())


def test_a_one_percent_difference_over_80_noisy_items_is_not_distinguishable():
    ours = _noisy(0.99, 0.3, seed=1)
    p = compare(ours, CONSTANT, mode="min", metric="task_price_mae")
    assert p.items == 80 and p.difference == pytest.approx(ours.mean() - CONSTANT.mean())
    assert p.difference == pytest.approx(-0.01 * CONSTANT.mean())  # 1 % better on average
    assert p.low < 0 < p.high and p.verdict == NOISE
    text = sentence(p, ours="winner", theirs="constant answer")
    assert text.startswith("price_mae: winner ") and "95 % CI" in text
    assert text.endswith("over 80 items: not distinguishable")


def test_a_clear_difference_is_better_or_worse_by_the_metric_s_mode():
    ours = _noisy(0.25, 0.3, seed=2)  # a quarter of the constant answer's error
    p = compare(ours, CONSTANT, mode="min", metric="task_price_mae")
    assert p.verdict == BETTER and p.high < 0
    assert compare(CONSTANT, ours, mode="min").verdict == WORSE
    # Accuracies: higher is better, and the difference is said in points.
    right, wrong = [1.0] * 60 + [0.0] * 20, [1.0] * 20 + [0.0] * 60
    acc = compare(right, wrong, mode="max", metric="task_label")
    assert acc.verdict == BETTER and acc.difference == pytest.approx(0.5)
    assert "+50.0 pts (95 % CI +" in sentence(acc, theirs="base model", share=True)
    assert compare(wrong, right, mode="max").verdict == WORSE


def test_the_bootstrap_is_seeded_and_pairs_only_items_both_have():
    ours = _noisy(0.9, 0.3, seed=3)
    assert compare(ours, CONSTANT, mode="min") == compare(ours, CONSTANT, mode="min")
    same = compare([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], mode="min")
    assert same.verdict == NOISE and same.low == same.high == 0.0
    gaps = compare([1.0, None, 3.0, float("nan")], [2.0, 5.0, None, 1.0], mode="min")
    assert gaps.items == 1 and gaps.difference == -1.0
    with pytest.raises(ValueError, match="pair item by item"):
        compare([1.0], [1.0, 2.0], mode="min")
    with pytest.raises(ValueError, match="no item has a value for both"):
        compare([None], [1.0], mode="min")
    with pytest.raises(ValueError, match="mode must be"):
        compare([1.0], [1.0], mode="lower")


def test_per_item_values_average_to_the_task_metrics():
    predictions = ["Price is $100.00", "about 3", "nothing", "Price is $1,200.50"] * 5
    references = ["Price is $110.00", "Price is $3.00", "Price is $50.00", "no number"] * 5
    values = item_values([PRICE], predictions, references)
    metrics = score(PRICE, predictions, references)
    for stat in ("mae", "hit", "parsed"):
        scored = [v for v in values[f"task_price_{stat}"] if v is not None]
        assert len(scored) == 15  # the reference without a number is not scored
        assert np.mean(scored) == pytest.approx(metrics[f"task_price_{stat}"])
    assert "task_price_rmsle" not in values  # a root of a mean: no per-item values
    label = {"type": "label", "name": "sentiment", "labels": ["positive", "negative"]}
    for spec in (label, {"type": "exact_match"}, {"type": "contains"}):
        answers = ["positive", "negative!", "Positive", "meh"]
        truth = ["positive", "negative", "negative", "positive"]
        (name, items), = item_values([spec], answers, truth).items()
        assert np.mean(items) == pytest.approx(score(spec, answers, truth)[name])
    custom = {"type": "custom", "function": "m:f", "metrics": {"f1": "max"}}
    assert item_values([custom], ["a"], ["a"]) == {}  # only aggregates: compared by the means
    kept = record([PRICE], predictions, references)
    assert kept["digest"] == digest(references) != digest(references[::-1])
    assert kept["items"] == 20


def _baseline(constant_errors, *, distinct_references=70):
    """A baseline.json with the constant answer's per-item errors on REFERENCES."""
    items = {"digest": digest(REFERENCES), "items": 80,
             "values": {"task_price_mae": list(constant_errors)}}
    base = {"digest": digest(REFERENCES), "items": 80,
            "values": {"task_price_mae": list(CONSTANT * 1.4)}}
    return {"task_price_mae": float(CONSTANT.mean() * 1.4), "task_distinct": 2.0,
            "task_samples": 80, "task_reference_distinct": distinct_references, ITEMS: base,
            "constant_reference": {"metrics": {"task_price_mae": float(np.mean(constant_errors)),
                                               "task_distinct": 1.0},
                                   "answers": {"price": "Price is $250.00"}, ITEMS: items}}


def _winner(errors, distinct=50.0):
    return ({"task_price_mae": float(np.mean(errors)), "task_price_parsed": 1.0,
             "task_distinct": distinct},
            {"digest": digest(REFERENCES), "items": 80,
             "values": {"task_price_mae": list(errors)}})


def test_a_winner_within_noise_of_the_constant_answer_does_not_beat_it():
    metrics, items = _winner(_noisy(0.99, 0.3, seed=1))
    assert metrics["task_price_mae"] < CONSTANT.mean()  # the means alone would call it a win
    verdict = judge(winner=metrics, baseline=_baseline(CONSTANT), scorers=[PRICE], items=items)
    assert not verdict["beats_constant"] and verdict["findings"] == ["not_distinguishable"]
    assert "not distinguishable from a constant answer on task_price_mae" in verdict["warnings"][0]
    text = render(verdict)
    assert "price_mae: winner " in text and "vs constant answer " in text
    assert "the winner beats the constant answer" not in text
    # The same winner, judged without per-item values (an older sweep dir): the means, said so.
    old = judge(winner=metrics, baseline=_baseline(CONSTANT), scorers=[PRICE])
    assert old["beats_constant"] and old["unpaired"] == ["task_price_mae"]
    assert "compared by the means only" in render(old)


def test_a_clear_winner_beats_the_constant_answer_and_the_base_model_with_intervals():
    metrics, items = _winner(_noisy(0.25, 0.3, seed=4))
    verdict = judge(winner=metrics, baseline=_baseline(CONSTANT), scorers=[PRICE], items=items)
    assert verdict["beats_constant"] and verdict["beats_base"] and not verdict["warnings"]
    against = {c["against"]: c for c in verdict["comparisons"]}
    assert against["constant answer"]["verdict"] == BETTER == against["base model"]["verdict"]
    assert against["constant answer"]["high"] < 0
    lines = render(verdict).splitlines()
    assert any(line.startswith("price_mae: winner ") and "vs constant answer" in line
               and "95 % CI" in line and line.endswith(": better") for line in lines)
    assert lines[-1].startswith("the winner beats the constant answer on every task metric "
                                "(a paired comparison over the eval items")
    assert "(50 distinct; the references have 70)" in lines[-1]
    # Per-item values over other items (another eval set) are never paired.
    other = {**items, "digest": digest(REFERENCES[::-1])}
    assert compare_records(other, _baseline(CONSTANT)["constant_reference"][ITEMS],
                           metric="task_price_mae", mode="min") is None


def test_collapse_is_judged_against_the_references_own_distinct_answers():
    assert collapse_floor(70) == 14 and collapsed(6, distinct_references=70)
    assert not collapsed(14, distinct_references=70)
    assert collapsed(1, distinct_references=3) and not collapsed(2, distinct_references=3)
    assert not collapsed(5, distinct_references=5)  # 5 labels, each answered: not a collapse
    metrics, items = _winner(_noisy(0.25, 0.3, seed=4), distinct=6.0)
    verdict = judge(winner=metrics, baseline=_baseline(CONSTANT), scorers=[PRICE], items=items)
    assert verdict["collapsed"] and verdict["findings"] == ["collapsed"]
    assert ("6 distinct answer(s) to 80 eval prompts, whose references have 70 distinct values "
            "(fewer than 14, a fifth of theirs, is a collapse)") in verdict["warnings"][0]
    few = judge(winner={**metrics, "task_distinct": 6.0},
                baseline=_baseline(CONSTANT, distinct_references=8), scorers=[PRICE], items=items)
    assert not few["collapsed"]  # 6 distinct answers where the references have 8


def _row(trial_id: str, errors) -> dict:
    value = float(np.mean(errors))
    return {"trial_id": trial_id, "status": "completed", "best_task_price_mae": value,
            "checkpoint_path": f"/s/trial_{trial_id}/checkpoint_000003",
            "checkpoint_value": value, "checkpoint_step": 30,
            ITEMS: {"digest": digest(REFERENCES), "items": 80,
                    "values": {"task_price_mae": list(errors)}}}


def test_the_winner_rule_when_the_best_two_are_within_noise():
    from orchestrator.sweepdir.results import best_record, usable_rows

    # b's mean error is 0.30 of the constant answer's, a's 0.31: 1.6 apart, within noise.
    rows = sorted([_row("a", _noisy(0.31, 0.3, seed=5)), _row("b", _noisy(0.30, 0.3, seed=6))],
                  key=lambda r: r["best_task_price_mae"])
    usable = usable_rows(rows, metric="task_price_mae")
    best = best_record(rows, metric="task_price_mae", mode="min", searched=[], baseline={})
    best["winner_rule"] = winner.rule_text("task_price_mae", "min")
    best["runner_up"] = winner.runner_up(usable, metric="task_price_mae", mode="min")
    # The rule: the better mean wins, also within noise; the runner-up is named beside it.
    assert best["trial_id"] == "b"  # the better mean, not the smaller trial id
    assert best["value"] < best["runner_up"]["value"]
    assert best["runner_up"]["within_noise"] is True
    assert best["runner_up"]["comparison"]["verdict"] == NOISE
    said = winner.lines(best)
    assert said[0].startswith("the runner-up is within noise of the winner: price_mae: winner ")
    assert said[1].startswith("winner rule: the better mean task_price_mae (lower is better)")
    # A clear runner-up; and one without per-item values (a loss metric, an older sweep).
    clear = [_row("a", _noisy(0.25, 0.3, seed=7)), _row("b", CONSTANT)]
    beaten = winner.runner_up(clear, metric="task_price_mae", mode="min")
    assert beaten["within_noise"] is False and beaten["comparison"]["verdict"] == BETTER
    assert "the winner beats the runner-up" in winner.lines(
        {**best, "runner_up": beaten})[0]
    unknown = winner.runner_up([{**r, ITEMS: None} for r in clear], metric="task_price_mae",
                               mode="min")
    assert unknown["within_noise"] is None and unknown["comparison"] is None
    assert "whether they differ beyond noise is not known" in winner.lines(
        {**best, "runner_up": unknown})[0]
    assert winner.runner_up(clear[:1], metric="task_price_mae", mode="min") is None


def test_the_promotion_gate_needs_a_win_beyond_noise_where_it_can_tell():
    def evaluation(errors):
        metrics, items = _winner(errors)
        return {**metrics, "eval_loss": float(np.mean(errors)) / 100, ITEMS: items}

    champion = evaluation(CONSTANT)
    close = evaluation(_noisy(0.99, 0.3, seed=1))
    wins, reason, paired = decide(close, champion, metric="task_price_mae", mode="min",
                                  min_improvement=0)
    assert not wins and paired["verdict"] == NOISE
    assert "the challenger must be better beyond noise" in reason
    assert paired["sentence"].startswith("price_mae: challenger ")
    clear = evaluation(_noisy(0.5, 0.3, seed=8))
    wins, reason, paired = decide(clear, champion, metric="task_price_mae", mode="min",
                                  min_improvement=0)
    assert wins and paired["verdict"] == BETTER and "item by item" in reason
    # The margin still applies on the means: better beyond noise, but not by 90 %.
    assert not decide(clear, champion, metric="task_price_mae", mode="min",
                      min_improvement="90%")[0]
    # The loss has no per-item values: today's rule on the means, and the reason says so.
    wins, reason, paired = decide(close, champion, metric="eval_loss", mode="min",
                                  min_improvement=0)
    assert wins and paired is None and "compared by the means only" in reason
