"""Numbers a user can trust, on hand-made data (no model, no sweep): one rule for a trial's best
step (ties included) across the live line, the leaderboard, ``status``, ``best.json`` and the
final table; accuracies compared in points; per-label accuracy; examples that cover the labels
or the errors; a verdict that tells unparseable answers, a learned format and cut references
apart."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.observe.verdict import judge
from orchestrator.sweepdir.results import (best_of, best_record, leaderboard_cells, trial_rows,
                                           vs_base)
from trainables.scoring import confusion, per_label, pick_examples

pytestmark = pytest.mark.fast

# One trial's evaluations: eval_loss 1.0 at steps 20, 60 and 80 (a tie), worse at 40.
HISTORY = [(20, 1.0), (40, 1.2), (60, 1.0), (80, 1.0)]
LABEL = {"type": "label", "name": "sentiment", "labels": ["positive", "negative", "neutral"]}


def test_best_of_takes_the_latest_step_among_equal_values():
    assert best_of([(1.0, 20), (1.2, 40), (1.0, 60), (1.0, 80)], mode="min") == (1.0, 80)
    assert best_of([(0.5, 10), (0.5, 30), (0.2, 40)], mode="max") == (0.5, 30)
    assert best_of([], mode="min") is None


def _checkpoints(tmp_path: Path, keep: int):
    """What Ray's own checkpoint manager keeps of HISTORY, as ``Result.best_checkpoints``."""
    from ray.train import Checkpoint, CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult

    manager = _CheckpointManager(CheckpointConfig(num_to_keep=keep,
                                                  checkpoint_score_attribute="eval_loss",
                                                  checkpoint_score_order="min"))
    for step, value in HISTORY:
        folder = tmp_path / "trial_t1" / f"checkpoint_{step:06d}"
        folder.mkdir(parents=True)
        manager.register_checkpoint(_TrainingResult(
            checkpoint=Checkpoint.from_directory(str(folder)),
            metrics={"eval_loss": value, "step": step}))
    return [(r.checkpoint, r.metrics) for r in manager.best_checkpoint_results]


def _live_entry(tmp_path: Path) -> dict:
    """The trial's entry in status.json, as the driver's callback keeps it during the run."""
    from orchestrator.callbacks.trial_status import StatusCallback

    callback = StatusCallback(tmp_path, metric="eval_loss", mode="min", searched=["lora.r"],
                              max_steps=80, planned=1, rungs=[])
    callback.setup()
    trial = SimpleNamespace(trial_id="t1", config={"lora.r": 8}, status="RUNNING")
    callback.on_trial_start(0, [trial], trial)
    for step, value in HISTORY:
        callback.on_trial_result(0, [trial], trial, {"step": step, "eval_loss": value})
    callback.on_trial_complete(0, [trial], trial)
    callback.on_experiment_end([SimpleNamespace(status="TERMINATED")])
    return json.loads((tmp_path / "status.json").read_text())["trials"][0]


@pytest.mark.parametrize("keep", [1, 2, 4])
def test_one_best_step_everywhere_with_ties(tmp_path, keep, capsys, caplog):
    import pandas as pd

    with caplog.at_level(logging.INFO):
        live = _live_entry(tmp_path)
    assert "trial t1 completed: best eval_loss 1 at step 80" in caplog.messages  # the live line
    result = SimpleNamespace(
        metrics={"trial_id": "t1"}, path=str(tmp_path / "trial_t1"), error=None,
        config={"lora.r": 8}, best_checkpoints=_checkpoints(tmp_path, keep),
        metrics_dataframe=pd.DataFrame({"step": [s for s, _ in HISTORY],
                                        "eval_loss": [v for _, v in HISTORY]}))
    rows = trial_rows([result], metric="eval_loss", mode="min", max_steps=80,
                      searched=["lora.r"])
    best = best_record(rows, metric="eval_loss", mode="min", searched=["lora.r"],
                       baseline={"eval_loss": 2.0})
    header, table = leaderboard_cells(rows, metric="eval_loss", searched=["lora.r"],
                                      baseline={"eval_loss": 2.0})
    # Before: the live line said 80, leaderboard.csv 20 and best.json 60 (Ray keeps 60 and 80).
    assert live["best_step"] == 80 and rows[0]["best_step"] == 80
    assert best["step"] == 80 and best["checkpoint_path"].endswith("checkpoint_000080")
    assert table[0][header.index("step")] == "80"  # the final table run prints

    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(
        {"search": {"metric": "eval_loss", "mode": "min"}}))
    with caplog.at_level(logging.INFO):
        assert main(["status", str(tmp_path), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out or caplog.messages[-1])
    assert data["best"]["step"] == 80 and data["trials"][0]["best_step"] == 80


def test_trials_with_equal_values_rank_by_trial_id_everywhere():
    rows = [{"trial_id": "b", "status": "completed", "best_eval_loss": 1.0},
            {"trial_id": "a", "status": "completed", "best_eval_loss": 1.0}]
    from orchestrator.sweepdir.results import best_first

    ordered = sorted(rows, key=lambda r: (*best_first(r, metric="eval_loss", mode="min"),
                                          r["trial_id"]))
    assert [r["trial_id"] for r in ordered] == ["a", "b"]


def test_accuracy_is_compared_in_points_also_with_a_base_of_zero():
    assert vs_base(0.125, 0.0, share=True) == "+12.5 pts"
    assert vs_base(0.8, 0.3, share=True) == "+50.0 pts"  # not +166.7%
    assert vs_base(40.0, 200.0) == "-80.0%" and vs_base(1.0, 0.0) == "-"  # errors: relative
    rows = [{"trial_id": "a", "status": "completed", "best_task_sentiment": 0.5, "best_step": 10,
             "steps_run": 10}]
    header, table = leaderboard_cells(rows, metric="task_sentiment", searched=[],
                                      baseline={"task_sentiment": 0.0}, share=True)
    assert table[0][header.index("vs base")] == "+50.0 pts"


def _hand_made_sweep(tmp_path: Path, *, references: list[str], predictions: list[str],
                     base: float) -> Path:
    """A finished one-trial sweep dir with a label scorer, as `run` would have left it."""
    sweep = tmp_path / "labels"
    trial = sweep / "trial_t1"
    trial.mkdir(parents=True)
    matrix = {"sentiment": confusion(LABEL, predictions, references)}
    accuracy = sum(p == r for p, r in zip(predictions, references)) / len(references)
    (sweep / "sweep.yaml").write_text(yaml.safe_dump({
        "search": {"metric": "task_sentiment", "algorithm": "random"},
        "evaluation": {"scorers": [LABEL]}, "model": {"name_or_path": "builtin:tiny-llama"}}))
    (sweep / "baseline.json").write_text(json.dumps({
        "task_sentiment": base, "eval_loss": 3.0, "task_samples": len(references),
        "task_reference_distinct": len(set(references)), "task_distinct": 1.0,
        "constant_reference": {"metrics": {"task_sentiment": 0.5, "task_distinct": 1.0},
                               "answers": {"sentiment": "positive"}}}))
    report = {"step": 10, "eval_loss": 1.0, "task_sentiment": accuracy,
              "task_distinct": float(len(set(predictions))),
              "task_confusion": json.dumps(matrix), "task_examples": "[]"}
    with open(trial / "progress.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(report))
        writer.writeheader()
        writer.writerow(report)
    (sweep / "status.json").write_text(json.dumps({
        "sweep": "labels", "state": "finished", "metric": "task_sentiment", "mode": "max",
        "searched": [], "planned_trials": 1, "updated_at": "2026-12-06T00:00:00Z",
        "trials": [{"trial_id": "t1", "status": "completed", "config": {},
                    "best_value": accuracy, "best_step": 10, "steps_run": 10, "error": "",
                    "task": {"task_sentiment": accuracy}}]}))
    return sweep


def _status(capsys, caplog, *args) -> str:
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(["status", *args]) == 0
    return capsys.readouterr().out or "\n".join(caplog.messages)


def test_status_shows_points_and_per_label_accuracy(tmp_path, capsys, caplog):
    references = ["positive"] * 6 + ["negative"] * 3 + ["neutral"]
    predictions = ["positive"] * 6 + ["positive", "negative", "negative"] + ["nonsense"]
    sweep = _hand_made_sweep(tmp_path, references=references, predictions=predictions, base=0.0)
    data = json.loads(_status(capsys, caplog, str(sweep), "--format", "json"))
    best = data["best"]
    assert best["vs_base"] == "+80.0 pts" and best["points_vs_baseline"] == pytest.approx(80.0)
    view = best["labels"]["sentiment"]
    assert view["per_label"]["positive"] == {"items": 6, "accuracy": 1.0}
    assert view["per_label"]["negative"]["accuracy"] == pytest.approx(2 / 3)
    assert view["per_label"]["neutral"] == {"items": 1, "accuracy": 0.0}
    assert view["confusion"]["negative"] == {"positive": 1, "negative": 2}
    assert view["parsed"] == pytest.approx(0.9)
    text = _status(capsys, caplog, str(sweep))
    assert "base model 0.0000, +80.0 pts" in text and "neutral 0% (1)" in text
    assert "+80.0 pts" in text.split("---")[-1]  # the table's vs base cell, not "-"


def test_report_has_the_confusion_matrix(tmp_path):
    from orchestrator.observe.report import write_report

    references = ["positive"] * 6 + ["negative"] * 4
    sweep = _hand_made_sweep(tmp_path, references=references,
                             predictions=["positive"] * 10, base=0.1)
    best = {"trial_id": "t1", "step": 10, "value": 0.6, "metric": "task_sentiment", "config": {},
            "confusion": {"sentiment": confusion(LABEL, ["positive"] * 10, references)},
            "verdict": judge(winner={"task_sentiment": 0.6, "task_distinct": 1.0},
                             baseline=json.loads((sweep / "baseline.json").read_text()),
                             scorers=[LABEL])}
    (sweep / "best.json").write_text(json.dumps(best))
    page = write_report(sweep).read_text()
    assert "sentiment: answers per reference label" in page
    assert "<td>negative</td><td>4</td><td>0</td><td>0%</td>" in page


def test_examples_cover_the_labels_and_the_error_range():
    references = ["positive"] * 8 + ["negative"] * 3 + ["neutral"]
    shown = pick_examples([LABEL], references, references, 4)
    assert {references[i] for i in shown} == {"positive", "negative", "neutral"}
    number = {"type": "number", "name": "price", "pattern": r"\$(\d+)"}
    refs = [f"${v}" for v in range(100, 110)]
    preds = [f"${100 + 10 * i}" for i in range(10)]  # errors 0, 9, 18, ... 81
    picked = pick_examples([number], preds, refs, 3)
    assert picked == [0, 4, 9] or picked == [0, 5, 9]  # the best, the middle, the worst
    assert pick_examples([], ["a"] * 9, ["a"] * 9, 4) == [0, 1, 2, 3]
    assert per_label(confusion(LABEL, ["neutral"], ["negativ"]))["(none)"]["accuracy"] == 0


def _verdict(predictions, references, baseline=None):
    matrix = {"sentiment": confusion(LABEL, predictions, references)}
    accuracy = sum(p == r for p, r in zip(predictions, references)) / len(references)
    baseline = baseline or {"task_sentiment": 0.0, "task_samples": len(references),
                            "task_reference_distinct": len(set(references)),
                            "constant_reference": {"metrics": {"task_sentiment": 0.5},
                                                   "answers": {"sentiment": "positive"}}}
    return judge(winner={"task_sentiment": accuracy,
                         "task_distinct": float(len(set(predictions)))},
                 baseline=baseline, scorers=[LABEL], confusion=matrix)


def test_verdict_tells_unparseable_format_only_and_references_not_labels_apart():
    references = ["positive", "negative"] * 5
    unparseable = _verdict(["AAAA"] * 8 + ["positive", "negative"], references)
    assert unparseable["findings"][0] == "answers_unparseable"
    assert "answers unparseable: only 20% of its answers start with one of the labels" in \
        unparseable["warnings"][0] and "format, not the task" not in unparseable["warnings"][0]
    format_only = _verdict(["negative", "positive"] * 5, references)
    assert format_only["findings"] == ["format_only"]
    assert "only the format learned" in format_only["warnings"][0]
    cut = _verdict(["positive", "negativ"] * 5, ["positive", "negativ"] * 5)
    assert cut["findings"][0] == "references_not_labels"
    assert "5 of the 10 eval references are none of the labels" in cut["warnings"][0]
    fine = _verdict(references, references)
    assert fine["findings"] == [] and fine["beats_constant"]
    number = {"type": "number", "name": "price"}
    base = {"constant_reference": {"metrics": {"task_price_mae": 10.0}}}
    verdict = judge(winner={"task_price_mae": 50.0, "task_price_parsed": 0.1}, baseline=base,
                    scorers=[number])
    assert verdict["findings"] == ["answers_unparseable"]
    assert "only 10% of its answers hold a number" in verdict["warnings"][0]


def _facts(*, metric: str, value: float, revision: str | None, trials: int,
           scheduler: str) -> dict:
    """What the bundle's sweep_summary.json holds, for a local base model and a label scorer."""
    eval_row = {"eval_loss": 0.9, "eval_perplexity": 2.46, "eval_mean_token_accuracy": 0.7}
    return {
        "sweep": {"name": "sentiment", "metric": metric, "mode": "max", "algorithm": "optuna",
                  "scheduler": {"type": scheduler}, "num_trials": trials, "search_seed": 0,
                  "search_space": {"lora.r": "choice [8, 16]"}, "scorers": [LABEL]},
        "winner": {"trial_id": "t1", "step": 30, "value": value, "eval": eval_row,
                   "searched": {"lora.r": 8}, "target_modules": ["q_proj"],
                   "task": {"task_sentiment": value, "task_distinct": 3.0},
                   "verdict": {"rows": {"winner": {"task_sentiment": value, "task_distinct": 3},
                                        "base model": {"task_sentiment": 0.0, "task_distinct": 1},
                                        "constant answer": {"task_sentiment": 0.4,
                                                            "task_distinct": 1}},
                               "warnings": []}},
        "baseline": {"task_sentiment": 0.0, "eval_loss": 3.0, "eval_samples": 49,
                     "task_samples": 24},
        "trials": [{"trial_id": "t1", "status": "completed", f"best_{metric}": value,
                    "best_step": 30}][:trials],
        "training": {"learning_rate": 1e-4, "max_steps": 30, "per_device_train_batch_size": 4,
                     "gradient_accumulation_steps": 1, "lr_scheduler_type": "cosine",
                     "warmup_ratio": 0.0, "seed": 42},
        "lora": {"r": 8, "alpha_ratio": 2.0, "dropout": 0.05, "target_modules": "attention",
                 "use_rslora": False, "use_dora": False},
        "base_model": {"name_or_path": "/models/local-smol", "revision": revision,
                       "quantization": {"mode": "4bit", "quant_type": "nf4",
                                        "double_quant": True}},
        "data": {"format": "prompt_completion",
                 "train": {"file": "train.jsonl", "sha256": "ab" * 32, "rows": 216},
                 "eval": {"file": "eval.jsonl", "sha256": "cd" * 32, "rows": 54}},
        "libraries": {"peft": "0.18"}, "project": {"commit": "0123456789abcdef", "dirty": False},
    }


def test_model_card_states_what_was_scored_and_the_winning_task_metric():
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    from orchestrator.promotion.model_card import render_card

    text = render_card(_facts(metric="task_sentiment", value=0.875, revision=None, trials=1,
                              scheduler="none"), repo_id="acme/sentiment", curve=False)
    card = ModelCard(text)
    assert "`eval.jsonl`, 24 examples scored of its 54 rows" in card.text  # not "54 examples"
    assert "1 trial searched by optuna without early stopping" in card.text
    assert "revision None" not in card.text and "`None`" not in card.text
    assert "not recorded (a local model folder)" in card.text
    assert "+87.5 pts" in card.text  # an accuracy vs a base of 0: points, not "-"
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert (results[0].metric_type, results[0].metric_value) == ("sentiment", 0.875)
    assert "objective" in results[0].metric_name
    assert {r.metric_type for r in results} >= {"loss", "accuracy"}
    many = render_card(_facts(metric="eval_loss", value=0.9, revision="abc123", trials=4,
                              scheduler="asha"), repo_id=None, curve=False)
    assert "4 trials searched by optuna with asha early stopping" in many
    assert "`eval.jsonl`, 49 examples scored of its 54 rows" in many


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_status_to_a_reader_that_closed_the_pipe_ends_quietly(tmp_path, fmt):
    """``status --format csv | (exec 0<&-; sleep 1)``: the reader closes the pipe before the
    first write. The data is written to stdout itself (not through a logger), so the broken
    pipe ends the command quietly, without a "Logging error" traceback."""
    import os
    import subprocess
    import sys

    sweep = _hand_made_sweep(tmp_path, references=["positive"], predictions=["positive"],
                             base=0.0)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes
    try:
        proc = subprocess.run([sys.executable, "-m", "orchestrator", "status", str(sweep),
                               "--format", fmt], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    finally:
        os.close(write)
    assert proc.stderr == "", proc.stderr
    assert proc.returncode == 1  # the data did not reach anyone
