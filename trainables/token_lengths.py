"""Token lengths of prompt/completion rows, as TRL's ``SFTTrainer`` tokenizes and truncates them.

Checked against TRL 1.16 (``trl/trainer/sft_trainer.py``, ``_prepare_dataset``):

* text rows: the prompt is ``tokenizer(prompt)``, the sequence ``tokenizer(prompt + completion
  + eos)`` (EOS appended unless the completion ends with it), special tokens as the
  tokenizer adds them;
* chat rows: the prompt is the chat template of the prompt messages with the generation
  prompt, the sequence that of prompt + completion messages;
* the completion starts where the two token lists diverge (``common_prefix_length``);
* ``max_length`` keeps the first tokens (``truncation_mode="keep_start"``) and drops a row left
  with no completion token; packed training rows are truncated the same way (``bfd``), and
  a row with no completion token left stays but teaches nothing.

``tests/test_trainable.py`` compares these lengths with the rows a real ``SFTTrainer`` built,
so an upgrade that tokenizes differently fails there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SplitLengths:
    """One split's token lengths against ``max_length``."""

    name: str  # "train" or "eval"
    rows: int
    prompt: tuple[int, int, int]  # median, p95, max
    completion: tuple[int, int, int]
    longest: int  # the longest prompt + completion
    cut: int  # rows whose completion loses tokens (the dropped ones included)
    dropped: int  # rows with no completion token left
    max_length: int
    total: int = 0  # rows in the split (more than ``rows`` when a sample was counted)

    @property
    def cut_share(self) -> float:
        return self.cut / self.rows if self.rows else 0.0


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _chat_ids(tokenizer, conversations: list[list[dict]], *, generation_prompt: bool):
    return [tokenizer.apply_chat_template(c, add_generation_prompt=generation_prompt,
                                          tokenize=True, return_dict=True)["input_ids"]
            for c in conversations]


def row_lengths(ds, tokenizer) -> list[tuple[int, int]]:
    """``(prompt tokens, prompt + completion tokens)`` of each row of a prompt/completion
    dataset (``trainables.data.to_prompt_completion``)."""
    prompts, completions = list(ds["prompt"]), list(ds["completion"])
    if not prompts:
        return []
    if isinstance(prompts[0], list):  # chat messages
        prompt_ids = _chat_ids(tokenizer, prompts, generation_prompt=True)
        full_ids = _chat_ids(tokenizer, [p + c for p, c in zip(prompts, completions)],
                             generation_prompt=False)
    else:
        eos = tokenizer.eos_token or ""
        full = [p + (c if c.endswith(eos) else c + eos) for p, c in zip(prompts, completions)]
        # Fast tokenizers encode a list in one call (Rust, in parallel).
        prompt_ids = tokenizer(prompts)["input_ids"]
        full_ids = tokenizer(full)["input_ids"]
    return [(_common_prefix(p, f), len(f)) for p, f in zip(prompt_ids, full_ids)]


def _stats(values: list[int]) -> tuple[int, int, int]:
    """Median, 95th percentile (nearest rank) and maximum."""
    ordered = sorted(values)
    n = len(ordered)
    return ordered[(n - 1) // 2], ordered[max(0, math.ceil(0.95 * n) - 1)], ordered[-1]


def sample(ds, rows: int | None):
    """``ds``, or a seeded sample of ``rows`` of its rows when it has more."""
    if rows is None or len(ds) <= rows:
        return ds
    return ds.shuffle(seed=0).select(range(rows))


def split_lengths(name: str, ds, tokenizer, max_length: int, *,
                  rows: int | None = None) -> SplitLengths:
    """The token lengths of one split, and the rows ``max_length`` would cut or drop; with
    ``rows``, of a seeded sample of that many rows when the split has more."""
    total = len(ds)
    lengths = row_lengths(sample(ds, rows), tokenizer)
    prompts = [p for p, _ in lengths] or [0]
    completions = [t - p for p, t in lengths] or [0]
    return SplitLengths(
        name=name, rows=len(lengths), prompt=_stats(prompts), completion=_stats(completions),
        longest=max((t for _, t in lengths), default=0),
        cut=sum(t > max_length for _, t in lengths),
        dropped=sum(p >= max_length for p, _ in lengths),
        max_length=max_length, total=total)
