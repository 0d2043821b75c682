"""Which trial wins when the best two are within noise of each other, and saying so.

The leaderboard ranks trials by their best checkpoint's value of the sweep's metric. Two
trials a few items apart on 80 eval items are not known to differ, so the winner is compared
with the runner-up the way every "beats" is (a paired comparison over the same items,
``paired.py``), and the rule that picks between them is stated in ``best.json`` and printed.

The rule: **the better mean wins**, also within noise. It is the single best estimate of
which is better; it is the order the leaderboard, ``status``, ASHA and the searcher all use,
so the trial promoted is the first row a user sees; and "the cheaper one" would need a cost
the sweep does not rank by (steps, rank, wall time disagree). Within noise, either trial is
as good as the evaluation can tell, and the runner-up is named beside the winner.
"""

from __future__ import annotations

from typing import Any

from trainables.items import ITEMS

from .paired import BETTER, NOISE, compare_records, sentence

RULE = "better mean"


def rule_text(metric: str, mode: str) -> str:
    """The winner rule as ``best.json`` states it and the sweep prints it."""
    return (f"the better mean {metric} ({'lower' if mode == 'min' else 'higher'} is better) "
            f"at a trial's best checkpoint wins, also when the runner-up is within noise of it "
            f"(equal values: the smaller trial id); within noise, either is as good as the "
            f"eval items can tell")


def runner_up(usable: list[dict[str, Any]], *, metric: str, mode: str,
              share: bool = False) -> dict[str, Any] | None:
    """The runner-up (the second of ``usable``, best-first leaderboard rows that can win)
    against the winner: ``{"trial_id", "value", "step", "within_noise", "comparison"}``;
    ``comparison`` is the paired one (``paired.Paired`` fields and its ``sentence``), None
    without per-item values for ``metric`` for both (a loss metric, a custom scorer's, an
    older sweep), and then ``within_noise`` is None (not known). None with a single trial."""
    if len(usable) < 2:
        return None
    top, second = usable[0], usable[1]
    paired = compare_records(top.get(ITEMS), second.get(ITEMS), metric=metric, mode=mode)
    out = {"trial_id": second["trial_id"], "value": second["checkpoint_value"],
           "step": second["checkpoint_step"], "within_noise": None, "comparison": None}
    if paired is not None:
        out["within_noise"] = paired.verdict == NOISE
        out["comparison"] = {**paired.as_dict(), "sentence": sentence(
            paired, ours=f"winner {top['trial_id']}", theirs=f"runner-up {second['trial_id']}",
            share=share)}
    return out


def lines(best: dict[str, Any]) -> list[str]:
    """What is printed (and written on the card and the report) about the winner rule."""
    second = best.get("runner_up")
    if not second:
        return []
    comparison = second.get("comparison")
    if comparison is None:
        said = (f"the runner-up, trial {second['trial_id']} ({best['metric']} "
                f"{second['value']:.4g}), cannot be compared with the winner item by item "
                f"({best['metric']} has no per-item values), so whether they differ beyond "
                f"noise is not known")
    elif second["within_noise"]:
        said = (f"the runner-up is within noise of the winner: {comparison['sentence']}")
    elif comparison["verdict"] == BETTER:
        said = f"the winner beats the runner-up: {comparison['sentence']}"
    else:  # its best checkpoint is not its best evaluation (storage.max_gb stopped checkpoints)
        said = f"the winner against the runner-up, at their checkpoints: {comparison['sentence']}"
    return [said, f"winner rule: {best['winner_rule']}."]
