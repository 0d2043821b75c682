"""The price rule of the demo task, shared by the demo data and the builtin model's corpus.

An item's price is its category's base price x its material's factor x its quality's factor.
``examples/make_pricing_data.py`` writes the demo's fine-tuning data from it, and
``tiny_llama`` writes price statements into the pre-training corpus for the TRAINING item
combinations only (as a real LLM knows roughly what things cost before it is fine-tuned): the
held-out eval combinations appear nowhere, neither in the fine-tuning data nor in pre-training.
"""

from __future__ import annotations

import random

CATEGORIES = {"desk": 120, "chair": 45, "lamp": 30, "shelf": 60, "table": 150, "cabinet": 200,
              "bench": 80, "stool": 25, "mirror": 55, "rug": 70, "sofa": 400, "bed": 350}
MATERIALS = {"pine": 1.0, "plastic": 0.6, "steel": 1.3, "oak": 1.6, "walnut": 2.0,
             "bamboo": 1.1, "glass": 1.4, "aluminum": 1.2}
QUALITIES = (1, 2, 3, 4, 5)
SPLIT_SEED = 7

Combo = tuple[str, str, int]


def quality_factor(quality: int) -> float:
    return 0.6 + 0.2 * quality


def price(category: str, material: str, quality: int) -> float:
    """The price in dollars (whole dollars)."""
    return float(round(CATEGORIES[category] * MATERIALS[material] * quality_factor(quality)))


def money(value: float) -> str:
    return f"${value:.2f}"


def all_combos() -> list[Combo]:
    return [(c, m, q) for c in CATEGORIES for m in MATERIALS for q in QUALITIES]


def split(seed: int = SPLIT_SEED) -> tuple[list[Combo], list[Combo]]:
    """``(train_combos, eval_combos)``: a sixth of the combinations held out, deterministically."""
    combos = all_combos()
    random.Random(seed).shuffle(combos)
    n_eval = len(combos) // 6
    return combos[n_eval:], combos[:n_eval]


def article(word: str) -> str:
    return "An" if word[0] in "aeiou" else "A"


def fingerprint() -> dict:
    """Everything of the rule that the builtin model's corpus depends on (part of its cache
    key: a changed rule builds a new model)."""
    return {"categories": CATEGORIES, "materials": MATERIALS, "qualities": list(QUALITIES),
            "split_seed": SPLIT_SEED, "quality_factor": [quality_factor(q) for q in QUALITIES]}
