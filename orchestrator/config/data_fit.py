"""Does the data fit the model? Token lengths against ``data.max_length``, and what the builtin
model was pre-trained for. Part of pre-flight: every row of both splits, tokenized with the
model's own tokenizer (chat template included) exactly as the trainer will.

A cut completion is a cut label: the model learns half an answer, and an eval row scored
against it is judged on a reference nobody wrote. So any cut eval row is an error, and so is
more than ``MAX_CUT_TRAIN_SHARE`` of the training rows; a few long training rows losing their
tail (usual for long-form data) is a warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainables.token_lengths import SplitLengths

# More cut training rows than this share is an error: a max_length chosen for other data, not
# a long tail of a few outliers.
MAX_CUT_TRAIN_SHARE = 0.05
# What the warning about the builtin model points to: small, real, with a chat template.
REAL_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Below this share of training prompts that name a demo item, the data is not the demo's.
DEMO_DOMAIN_SHARE = 0.9
# Training rows counted at most (a seeded sample beyond): chat rows take about 0.6 ms each
# on one core, so 20,000 take seconds. Eval rows are all counted (each one is scored).
MAX_TRAIN_ROWS = 20_000


@dataclass(frozen=True)
class DataFit:
    """What pre-flight learned about the data and the model: the token-length table (lines
    to show), problems (errors) and warnings."""

    table: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def fitting_length(longest: int) -> int:
    """A ``max_length`` that holds ``longest`` tokens: rounded up to a multiple of 16."""
    return -(-longest // 16) * 16


def length_table(splits: list[SplitLengths], *, model: str) -> list[str]:
    """The per-split token lengths as a small table, one line each."""
    limit = splits[0].max_length
    head = ["split", "rows", "prompt med/p95/max", "completion med/p95/max", "cut", "dropped"]
    rows = [[s.name, str(s.rows) if s.rows == s.total else f"{s.rows} of {s.total}",
             "/".join(map(str, s.prompt)), "/".join(map(str, s.completion)),
             f"{s.cut} ({100 * s.cut_share:.1f} %)", str(s.dropped)] for s in splits]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [f"token lengths ({model} tokenizer; data.max_length = {limit}; cut: the "
             f"completion loses tokens, dropped: none left):"]
    for r in [head, *rows]:
        lines.append("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                      for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    return lines


def length_problems(splits: list[SplitLengths], *, model_max: int | None = None
                    ) -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` for the rows ``data.max_length`` cuts (see the module doc)."""
    longest = max(s.longest for s in splits)
    limit = splits[0].max_length
    fit = fitting_length(longest)
    if model_max and fit > model_max:
        fit = model_max
        too_long = (f" (the model takes at most {model_max} tokens: shorten or remove the rows "
                    f"longer than that)")
    else:
        too_long = ""
    fix = (f"Fix: set data.max_length: {fit} or more{too_long} (the longest row, prompt and "
           f"completion, is {longest} tokens), or shorten or remove the longest rows.")
    problems, warnings = [], []
    for s in splits:
        if not s.cut:
            continue
        dropped = f", {s.dropped} of them with no completion left" if s.dropped else ""
        sampled = "" if s.rows == s.total else f"; a seeded sample of the {s.total}"
        share = f"{s.cut} of {s.rows} {s.name} rows ({100 * s.cut_share:.1f} %{sampled})"
        if s.name == "eval":
            problems.append(
                f"data.max_length = {limit}: {share} would be cut{dropped}: the eval loss "
                f"would be measured on cut answers and a row with nothing left is not "
                f"evaluated at all, so the trials, the base model and the constant answer "
                f"would be judged on other data than yours. {fix}")
        elif s.cut_share > MAX_CUT_TRAIN_SHARE:
            problems.append(
                f"data.max_length = {limit}: {share} would lose part or all of their completion "
                f"(the answer they teach) to truncation{dropped}; at most "
                f"{100 * MAX_CUT_TRAIN_SHARE:g} % may. {fix}")
        else:
            warnings.append(
                f"data.max_length = {limit}: {share} lose part or all of their completion "
                f"to truncation{dropped}. {fix}")
    return problems, warnings


def _text(value) -> str:
    """A prompt or completion as text (chat messages: their contents)."""
    if isinstance(value, list):
        return "\n".join(str(m.get("content") or "") for m in value)
    return str(value)


def demo_share(prompts: list) -> float:
    """The share of prompts that name an item of the demo's pricing data."""
    from trainables.pricing_rule import CATEGORIES

    item = re.compile(r"\b(" + "|".join(CATEGORIES) + r")s?\b", re.IGNORECASE)
    return sum(bool(item.search(_text(p))) for p in prompts) / max(1, len(prompts))


def builtin_domain_warning(name: str, prompts: list) -> list[str]:
    """The builtin model was pre-trained for the demo's pricing data only: on other data it
    learns nothing useful. A warning when few training prompts name a demo item."""
    share = demo_share(prompts)
    if share >= DEMO_DOMAIN_SHARE:
        return []
    return [f"model.name_or_path = {name}: the builtin model was pre-trained for the demo's "
            f"pricing task only (its vocabulary and its knowledge: furniture prices), and "
            f"{100 * share:.0f} % of these training prompts are about it; on other data it "
            f"learns little or nothing (on a capitals Q&A set: loss ~5.9 after 600 steps, "
            f"answers 'AA...'). Fix: for your own data use a small real model, e.g. "
            f"model.name_or_path: {REAL_MODEL} (downloaded from the Hugging Face Hub on first "
            f"use), or a bigger one on a GPU."]


def check_data_fit(model: dict[str, Any], data: dict[str, Any], fmt: str | None, *,
                   seed: int) -> DataFit:
    """Tokenize both splits (the rows the trainer will see: the eval split held out with
    ``seed`` when there is no ``data.eval``) and judge their lengths; warn when the builtin
    model is pointed at data other than the demo's.

    The builtin model's tokenizer is trained alone when the model is not built yet.
    """
    from trainables import tiny_llama
    from trainables.data import DataError, load_splits
    from trainables.model import load_tokenizer
    from trainables.token_lengths import sample, split_lengths

    if fmt is None:
        return DataFit()
    try:
        train, evalset, _fmt = load_splits(data, seed=seed)
    except DataError:  # reported by the data check
        return DataFit()
    name = model["name_or_path"]
    warnings = []
    try:
        if tiny_llama.is_builtin(name):
            warnings += builtin_domain_warning(
            name, list(sample(train, MAX_TRAIN_ROWS)["prompt"]))
            tokenizer = tiny_llama.tokenizer()  # without building the model
        else:
            tokenizer = load_tokenizer(model)
    except (OSError, ValueError):  # reported by the model check
        return DataFit(warnings=warnings)
    if isinstance(train["prompt"][0], list) and not tokenizer.chat_template:
        return DataFit(warnings=warnings)  # check_chat_template says so
    limit = int(data["max_length"])
    splits = [split_lengths("train", train, tokenizer, limit, rows=MAX_TRAIN_ROWS),
              split_lengths("eval", evalset, tokenizer, limit)]
    model_max = getattr(tokenizer, "model_max_length", None)
    problems, length_warnings = length_problems(
        splits, model_max=model_max if isinstance(model_max, int) and model_max < 10**6 else None)
    return DataFit(table=length_table(splits, model=name), problems=problems,
                   warnings=length_warnings + warnings)
