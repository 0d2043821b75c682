"""The builtin model's pre-training corpus keeps the demo's eval items held out."""

from __future__ import annotations

import json
import re

import pytest

from trainables import pricing_rule as rule
from trainables.tiny_llama import RECIPE, price_corpus

from .conftest import EXAMPLES

pytestmark = pytest.mark.fast

STATEMENT = re.compile(r"(\w+) (\w+),? (?:of quality|with quality|rated|quality) (\d)")
BY_QUALITY = re.compile(r"Price list for (\w+) (\w+)s: (.*)")
BY_MATERIAL = re.compile(r"Price list for (\w+)s of quality (\d): (.*)")


def combos_named(line: str) -> set[tuple[str, str, int]]:
    found = set()
    if m := BY_QUALITY.match(line):
        found |= {(m[2], m[1], int(q)) for q in re.findall(r"quality (\d)", m[3])}
    elif m := BY_MATERIAL.match(line):
        found |= {(m[1], mat, int(m[2])) for mat in re.findall(r"(\w+) \$", m[3])}
    else:
        for material, category, quality in STATEMENT.findall(line):
            if category in rule.CATEGORIES and material in rule.MATERIALS:
                found.add((category, material, int(quality)))
    return found


def test_price_corpus_names_training_items_only():
    train, held_out = rule.split()
    corpus = price_corpus(RECIPE["price_lines"], RECIPE["seed"], RECIPE["factor_share"],
                          RECIPE["list_share"])
    named = set().union(*(combos_named(line) for line in corpus))
    assert named and not named & set(held_out)
    assert named <= set(train) and len(named) > 0.9 * len(train)
    # Each price stated is the rule's.
    for line in corpus[:2000]:
        for category, material, quality in combos_named(line):
            assert rule.money(rule.price(category, material, quality)) in line


def test_shipped_demo_data_follows_the_rule_and_holds_out_its_eval_items():
    train, held_out = rule.split()

    def rows(name):
        return [json.loads(line) for line in (EXAMPLES / "data" / name).read_text().splitlines()]

    def combo(row):
        (found,) = combos_named(row["prompt"].replace(", quality", " quality"))
        return found

    eval_rows = rows("pricing_eval.jsonl")
    assert {combo(r) for r in eval_rows} == set(held_out)
    assert {combo(r) for r in rows("pricing_train.jsonl")} <= set(train)
    for r in eval_rows:
        assert r["completion"] == f"Price is {rule.money(rule.price(*combo(r)))}"
