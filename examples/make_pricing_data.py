"""Regenerate the shipped product-pricing dataset (deterministic).

    python examples/make_pricing_data.py

Each row: an item description in, "Price is $X.XX" out. The price follows a fixed rule
(category base price x material factor x quality factor), so a model can learn it. Eval rows use
item combinations never seen in training, so the eval loss measures generalisation.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CATEGORIES = {"desk": 120, "chair": 45, "lamp": 30, "shelf": 60, "table": 150, "cabinet": 200,
              "bench": 80, "stool": 25, "mirror": 55, "rug": 70, "sofa": 400, "bed": 350}
MATERIALS = {"pine": 1.0, "plastic": 0.6, "steel": 1.3, "oak": 1.6, "walnut": 2.0,
             "bamboo": 1.1, "glass": 1.4, "aluminum": 1.2}
QUESTIONS = ["How much does this cost?", "What is the price of this item?",
             "Estimate the price:", "What would this sell for?"]


def price(category: str, material: str, quality: int) -> float:
    return round(CATEGORIES[category] * MATERIALS[material] * (0.6 + 0.2 * quality), 2)


def row(rng: random.Random, category: str, material: str, quality: int) -> dict:
    question = rng.choice(QUESTIONS)
    article = "An" if material[0] in "aeiou" else "A"
    return {"prompt": f"{question} {article} {material} {category}, quality {quality} of 5.\n",
            "completion": f"Price is ${price(category, material, quality):.2f}"}


def main(out_dir: Path = Path(__file__).parent / "data", seed: int = 7) -> None:
    rng = random.Random(seed)
    combos = [(c, m, q) for c in CATEGORIES for m in MATERIALS for q in range(1, 6)]
    rng.shuffle(combos)
    n_eval = len(combos) // 6
    eval_combos, train_combos = combos[:n_eval], combos[n_eval:]
    train = [row(rng, *rng.choice(train_combos)) for _ in range(1600)]
    evalset = [row(rng, *c) for c in eval_combos]
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("pricing_train.jsonl", train), ("pricing_eval.jsonl", evalset)):
        with open(out_dir / name, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        print(f"wrote {len(rows)} rows to {out_dir / name}")


if __name__ == "__main__":
    main()
