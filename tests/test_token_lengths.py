"""Token lengths before the sweep: `validate` counts every row with the model's tokenizer,
refuses a max_length that cuts labels, and warns when the builtin model meets other data."""

from __future__ import annotations

import json
import random

import pytest

from orchestrator.cli import main

from .conftest import EXAMPLES, write_config

LABELS = {"positive": ["wonderful", "great", "lovely"], "negative": ["awful", "terrible", "poor"],
          "neutral": ["fine", "ordinary", "average"]}


def reviews(n: int, seed: int) -> list[dict]:
    """Sentiment rows, a user's own data: a review, then its label as the completion."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = list(LABELS)[i % 3]
        rows.append({"prompt": f"Review: the {rng.choice(['hotel', 'museum', 'train'])} was "
                               f"{rng.choice(LABELS[label])} and the service felt "
                               f"{rng.choice(LABELS[label])}. Is this review positive, negative "
                               f"or neutral?\n",
                     "completion": label})
    return rows


def write_rows(path, rows: list[dict], *, chat: bool = False):
    with open(path, "w") as f:
        for r in rows:
            if chat:
                r = {"messages": [{"role": "user", "content": r["prompt"].strip()},
                                  {"role": "assistant", "content": r["completion"]}]}
            f.write(json.dumps(r) + "\n")
    return path


def validate(capsys, config, *overrides) -> tuple[int, str]:
    code = main(["validate", str(config), *overrides])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("chat", [False, True], ids=["prompt_completion", "messages"])
def test_a_max_length_that_cuts_labels_is_refused_with_the_length_that_fits(
        capsys, tiny_model_dir, tmp_path, chat):
    # With this tokenizer the reviews are 65-73 tokens and their labels 7-9 (EOS included):
    # max_length 70 cuts most labels, as the sentiment sweep did at 96.
    train = write_rows(tmp_path / "train.jsonl", reviews(60, seed=0), chat=chat)
    evalset = write_rows(tmp_path / "eval.jsonl", reviews(12, seed=1), chat=chat)
    cfg = write_config(tmp_path / "s.yaml",
                       data={"train": str(train), "eval": str(evalset), "max_length": 70})
    code, out = validate(capsys, cfg)
    assert code == 2, out
    assert "Traceback" not in out and out.startswith("error: pre-flight found 2 problem(s)")
    problems = [line for line in out.splitlines() if "data.max_length = 70" in line]
    assert len(problems) == 2, out  # the training share and the cut eval references
    train_line, eval_line = problems
    if chat:
        assert ": 57 of 60 train rows (95.0 %) would lose part or all of their completion" \
            in train_line and "32 of them with no completion left" in train_line
        assert ": 12 of 12 eval rows (100.0 %) would be cut, 7 of them with no completion " \
            "left" in eval_line
    else:
        assert ": 42 of 60 train rows (70.0 %) would lose part or all" in train_line
        assert ": 7 of 12 eval rows (58.3 %) would be cut:" in eval_line
    assert "at most 5 % may" in train_line and "measured on cut answers" in eval_line
    longest, fits = (82, "data.max_length: 96") if chat else (76, "data.max_length: 80")
    for line in problems:
        assert f"Fix: set {fits} or more (the longest row, prompt and completion, is " \
            f"{longest} tokens)" in line
    if not chat:
        # The sweep dir of a sweep that already ran with it (resume, promote): said, not refused.
        from orchestrator.config.loading import load_config
        from orchestrator.config.preflight import preflight_report

        report = preflight_report(*load_config(cfg, existing=True))
        assert sum("data.max_length = 70" in w for w in report.fit.warnings) == 2
    # The length that the message names is enough: validate passes with it.
    code, out = validate(capsys, cfg, fits.replace(": ", "="))
    assert code == 0, out
    assert "cut" in out and "0 (0.0 %)" in out


def test_validate_shows_the_token_lengths_of_the_demo_before_the_model_is_built(
        capsys, tiny_model_dir, tmp_path, monkeypatch):
    code, out = validate(capsys, EXAMPLES / "demo_cpu.yaml")
    assert code == 0, out
    table = out[out.index("token lengths"):].splitlines()
    assert "builtin:tiny-llama tokenizer; data.max_length = 64" in table[0]
    assert table[1].split() == ["split", "rows", "prompt", "med/p95/max", "completion",
                                "med/p95/max", "cut", "dropped"]
    assert table[2].split() == ["train", "1600", "25/27/27", "10/10/11", "0", "(0.0", "%)", "0"]
    assert table[3].split() == ["eval", "80", "25/27/27", "10/10/10", "0", "(0.0", "%)", "0"]
    assert "warning" not in out  # the demo's own data on the builtin model
    # On a machine where the builtin model is not built yet, its tokenizer is trained alone
    # (seconds): the same table, and nothing is built.
    monkeypatch.setenv("QLORA_SWEEP_CACHE", str(tmp_path / "cache"))
    code, fresh = validate(capsys, EXAMPLES / "demo_cpu.yaml")
    assert code == 0, fresh
    assert fresh[fresh.index("token lengths"):].splitlines() == table
    assert not any((tmp_path / "cache").glob("tiny-llama-*"))


def test_a_few_cut_training_rows_are_a_warning(capsys, tiny_model_dir, tmp_path):
    rows = (EXAMPLES / "data/pricing_train.jsonl").read_text()
    long_row = {"prompt": "How much does this cost? " + "A very large oak desk. " * 12 + "\n",
                "completion": "Price is $240.00"}
    train = tmp_path / "train.jsonl"
    train.write_text(rows + json.dumps(long_row) + "\n")
    cfg = write_config(tmp_path / "s.yaml", data={"train": str(train)})
    code, out = validate(capsys, cfg)
    assert code == 0, out
    warning = next(line for line in out.splitlines() if line.startswith("warning:"))
    assert "data.max_length = 64: 1 of 1601 train rows (0.1 %) lose part or all of their " \
        "completion to truncation, 1 of them with no completion left" in warning
    assert "Fix: set data.max_length: 144 or more (the longest row, prompt and completion, is " \
        "144 tokens)" in warning


def test_the_builtin_model_on_other_data_says_what_it_is_for(capsys, tiny_model_dir, tmp_path):
    train = write_rows(tmp_path / "train.jsonl", reviews(30, seed=0), chat=True)
    cfg = write_config(tmp_path / "s.yaml",
                       data={"train": str(train), "eval": None, "max_length": 128})
    code, out = validate(capsys, cfg)
    assert code == 0, out
    warning = next(line for line in out.splitlines() if line.startswith("warning:"))
    assert "builtin:tiny-llama" in warning and "pre-trained for the demo's pricing task only" \
        in warning
    assert "0 % of these training prompts" in warning
    assert "model.name_or_path: HuggingFaceTB/SmolLM2-135M-Instruct" in warning


def test_references_are_the_completions_as_written_not_their_cut_tokens(tiny_model_dir):
    """An eval row cut at max_length is scored against its whole completion (the pre-flight
    refuses such data; this is what a sweep that got past it would score against)."""
    from datasets import Dataset

    from trainables import tiny_llama
    from trainables.task_eval import prompts_and_references

    tok = tiny_llama.tokenizer()
    prompt, completion = "Is this review positive?\n", "negative" + tok.eos_token
    ids = tok(prompt + completion)["input_ids"]
    start = len(tok(prompt)["input_ids"])
    cut = start + 2  # max_length keeps two tokens of the completion
    rows = Dataset.from_dict({
        "prompt": [prompt], "completion": [completion], "input_ids": [ids[:cut]],
        "labels": [[-100] * start + ids[start:cut]]})
    prompts, references = prompts_and_references(rows, tok, [0])
    assert tok.decode(ids[start:cut], skip_special_tokens=True) != "negative"
    assert references == ["negative"] and prompts == [ids[:start]]
    chat = Dataset.from_dict({
        "prompt": [[{"role": "user", "content": "Is this review positive?"}]],
        "completion": [[{"role": "assistant", "content": "negative"}]],
        "input_ids": [ids[:cut]], "labels": [[-100] * start + ids[start:cut]]})
    assert prompts_and_references(chat, tok, [0])[1] == ["negative"]


def lengths(name: str, *, rows: int, cut: int, longest: int = 90, total: int | None = None):
    from trainables.token_lengths import SplitLengths

    return SplitLengths(name=name, rows=rows, prompt=(60, 70, 80), completion=(5, 8, 10),
                        longest=longest, cut=cut, dropped=0, max_length=80,
                        total=total or rows)


@pytest.mark.fast
def test_how_many_cut_rows_are_an_error():
    from orchestrator.config.data_fit import length_problems

    ok = lengths("eval", rows=10, cut=0)
    # 5 % of the training rows cut is a warning; more is an error; one cut eval row is one.
    problems, warnings = length_problems([lengths("train", rows=100, cut=5), ok])
    assert not problems and len(warnings) == 1 and "5 of 100 train rows (5.0 %)" in warnings[0]
    problems, warnings = length_problems([lengths("train", rows=100, cut=6), ok])
    assert len(problems) == 1 and not warnings and "at most 5 % may" in problems[0]
    problems, _ = length_problems([lengths("train", rows=100, cut=0),
                                   lengths("eval", rows=10, cut=1)])
    assert len(problems) == 1 and "1 of 10 eval rows (10.0 %) would be cut" in problems[0]
    # The length that fits: the longest row rounded up to 16, within what the model takes.
    assert "data.max_length: 96 or more" in problems[0] and "is 90 tokens" in problems[0]
    problems, _ = length_problems([lengths("train", rows=100, cut=0), lengths(
        "eval", rows=10, cut=1, longest=600)], model_max=512)
    assert "data.max_length: 512 or more (the model takes at most 512 tokens" in problems[0]
    # A large training set is counted on a seeded sample, and the message says so.
    problems, _ = length_problems([lengths("train", rows=20_000, cut=2_000, total=90_000), ok])
    assert "2000 of 20000 train rows (10.0 %; a seeded sample of the 90000)" in problems[0]


@pytest.mark.fast
def test_the_builtin_model_warning_looks_at_what_the_prompts_are_about():
    from orchestrator.config.data_fit import builtin_domain_warning

    demo = [json.loads(line)["prompt"]
            for line in (EXAMPLES / "data/pricing_train.jsonl").read_text().splitlines()]
    assert builtin_domain_warning("builtin:tiny-llama", demo) == []
    chat = [[{"role": "user", "content": p.strip()}] for p in demo]  # the demo as chat rows
    assert builtin_domain_warning("builtin:tiny-llama", chat) == []
    capitals = [f"What is the capital of {c}?\n" for c in ("France", "Peru", "Japan")]
    assert "SmolLM2-135M-Instruct" in builtin_domain_warning("builtin:tiny-llama", capitals)[0]
