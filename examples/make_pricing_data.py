"""Regenerate the shipped product-pricing dataset (deterministic).

    python examples/make_pricing_data.py

Each row: an item description in, "Price is $X.XX" out. The price follows a fixed rule
(category base price x material factor x quality factor, ``trainables/pricing_rule.py``), so a
model can learn it. Eval rows use item combinations never seen in training (nor in the builtin
model's pre-training corpus), so the eval measures generalisation.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainables import pricing_rule as rule  # noqa: E402

QUESTIONS = ["How much does this cost?", "What is the price of this item?",
             "Estimate the price:", "What would this sell for?"]


def row(rng: random.Random, category: str, material: str, quality: int) -> dict:
    question = rng.choice(QUESTIONS)
    return {"prompt": f"{question} {rule.article(material)} {material} {category}, "
                      f"quality {quality} of 5.\n",
            "completion": f"Price is {rule.money(rule.price(category, material, quality))}"}


def main(out_dir: Path = Path(__file__).parent / "data", seed: int = 7,
         n_train: int = 1600) -> None:
    rng = random.Random(seed)
    train_combos, eval_combos = rule.split()
    train = [row(rng, *rng.choice(train_combos)) for _ in range(n_train)]
    evalset = [row(rng, *c) for c in eval_combos]
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("pricing_train.jsonl", train), ("pricing_eval.jsonl", evalset)):
        with open(out_dir / name, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        print(f"wrote {len(rows)} rows to {out_dir / name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data")
