"""Task metrics end to end: real generation on the builtin model, a real sweep ranked by a task
metric (ASHA, checkpoints and best.json follow it), the constant-answer reference and the
verdict, a custom scorer that fails in one trial, and promotion judged on the task metric."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from orchestrator.cli import main

from .conftest import EXAMPLES, ForkedCli, cli, write_config
from .hub_server import HubServer

PRICE = {"type": "number", "name": "price", "pattern": r"\$\s*([0-9][0-9,]*\.?[0-9]*)"}
WRITE = "hf_sentinel_write_token_task"

# A custom scorer that fails once: on its third call, which is the first evaluation of the
# first trial (the baseline calls it twice: the base model's answers and the constant answer).
FLAKY = '''
import os
COUNTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls.txt")

def score(predictions, references):
    calls = int(open(COUNTER).read()) + 1 if os.path.exists(COUNTER) else 1
    with open(COUNTER, "w") as f:
        f.write(str(calls))
    if calls == 3:
        raise RuntimeError("boom on call 3")
    return {"answered": sum(bool(p.strip()) for p in predictions) / len(predictions)}
'''


def test_generation_is_real_and_batching_does_not_change_answers(tiny_model_dir, tmp_path):
    from tests.test_trainable import tiny_spec
    from trainables.task_eval import TaskEval
    from trainables.trial import build_trainer, run_trial

    # cadence rungs: generate at the rung (10) and at the last step (30), not at 20
    s = tiny_spec(max_steps=30).replace(task_eval={
        "scorers": [PRICE], "samples": 12, "seed": 0, "max_new_tokens": 12, "batch_size": 12,
        "steps": [10], "examples": 3, "search_path": []})
    history = run_trial(s, output_dir=tmp_path / "out")
    assert [h["step"] for h in history] == [10, 20, 30]
    assert math.isnan(history[1]["task_price_mae"]) and "task_examples" not in history[1]
    history = [history[0], history[2]]
    for report in history:
        assert {"task_price_mae", "task_price_hit", "task_distinct"} <= set(report)
        assert math.isfinite(report["task_price_mae"])
        examples = json.loads(report["task_examples"])
        assert len(examples) == 3 and all(e["reference"].startswith("Price is $")
                                           for e in examples)
        assert all(e["prompt"].endswith("\n") for e in examples)

    # The adapter of the last checkpoint, loaded frozen: batched and one-by-one greedy answers.
    trainer = build_trainer(s, str(tmp_path / "probe"), save=False,
                            adapter_dir=str(tmp_path / "out" / "checkpoint-30"))
    judge = TaskEval(s.task_eval, trainer.eval_dataset, trainer.processing_class)
    batched = judge.predict(trainer.model)
    judge.task = {**judge.task, "batch_size": 1}
    single = judge.predict(trainer.model)
    assert batched == single
    assert any(p for p in batched)  # it answers something


def test_a_scorer_module_missing_on_this_node_fails_the_trial_at_its_start_not_for_good(
        tiny_model_dir, tmp_path):
    """A trial whose custom scorer cannot be imported (a module only the driver has) fails
    before training, and not for good: its restarts are not told to give up, and a restart in
    the same (reused) worker imports the module once it is there."""
    from tests.test_trainable import tiny_spec
    from trainables.scoring import ScorerImportError
    from trainables.trial import failure_marker, run_trial

    folder = tmp_path / "scorers"
    s = tiny_spec(max_steps=3, eval_steps=3, logging_steps=3).replace(warm_start=True).replace(
        task_eval={"scorers": [{"type": "custom", "function": "node_scorers:answered",
                                "metrics": {"answered": "max"}}],
                   "samples": 4, "seed": 0, "max_new_tokens": 4, "batch_size": 4,
                   "search_path": [str(folder)]})
    with pytest.raises(ScorerImportError, match="cannot import module 'node_scorers'") as err:
        run_trial(s, output_dir=tmp_path / "first")
    assert not list((tmp_path / "first").glob("checkpoint-*"))  # it failed before training
    assert failure_marker(err.value) is None  # the restarts try again
    folder.mkdir()
    (folder / "node_scorers.py").write_text(
        "def answered(predictions, references):\n"
        "    return {'answered': sum(bool(p) for p in predictions) / len(predictions)}\n")
    history = run_trial(s, output_dir=tmp_path / "again")
    assert [h["step"] for h in history] == [3] and 0 <= history[0]["task_answered_answered"] <= 1
    from trainables import warm

    warm.forget()


@pytest.fixture(scope="module")
def task_sweep(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("task-sweep")
    (root / "flaky.py").write_text(FLAKY)
    config = write_config(
        root / "task.yaml",
        data={"max_eval_samples": 24},
        training={"max_steps": 30, "eval_steps": 10, "logging_steps": 10},
        search_space={"training.learning_rate": {"choice": [3e-3, 1e-5, 2e-3]}},
        search={"algorithm": "optuna", "num_trials": 3, "max_concurrent": 1, "seed": 0,
                "metric": "task_price_mae",
                "initial_points": [{"training.learning_rate": 3e-3},
                                   {"training.learning_rate": 2e-3},
                                   {"training.learning_rate": 1e-5}]},
        scheduler={"type": "asha", "grace_period": 10, "reduction_factor": 2},
        evaluation={"scorers": [PRICE, {"type": "custom", "function": "flaky:score",
                                        "metrics": {"answered": "max"}}],
                    "max_new_tokens": 10, "examples": 2},
        storage={"path": str(root / "sweeps"), "name": "task", "keep_checkpoints": 2},
    )
    proc = cli("run", str(config), timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return root / "sweeps" / "task", proc.stdout


def _progress(trial_dir: Path) -> list[dict]:
    """The trial's reports (none for a trial that errored before its first)."""
    if not (trial_dir / "progress.csv").is_file():
        return []
    with open(trial_dir / "progress.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_sweep_ranks_by_the_task_metric(task_sweep):
    sweep, log = task_sweep
    best = json.loads((sweep / "best.json").read_text())
    assert best["metric"] == "task_price_mae" and best["mode"] == "min"
    rows = _progress(sweep / f"trial_{best['trial_id']}")
    values = {int(r["step"]): float(r["task_price_mae"]) for r in rows}
    # best.json names the checkpoint with the trial's best task metric, not its last one.
    assert best["value"] == pytest.approx(min(values.values()))
    assert values[best["step"]] == pytest.approx(min(values.values()))
    assert best["checkpoint_path"] and Path(best["checkpoint_path"]).is_dir()
    assert best["task_metrics"]["task_price_mae"] == pytest.approx(best["value"])

    # ASHA compared trials on the task metric: a trial stopped at a rung was worse there
    # than another trial at the same rung.
    status = json.loads((sweep / "status.json").read_text())
    assert status["metric"] == "task_price_mae"
    by_trial = {t["trial_id"]: t for t in status["trials"]}
    for t in status["trials"]:
        if t["status"] != "stopped_early":
            continue
        rung = t["rung"]
        mine = {int(r["step"]): float(r["task_price_mae"])
                for r in _progress(sweep / f"trial_{t['trial_id']}")}[rung]
        others = [{int(r["step"]): float(r["task_price_mae"])
                   for r in _progress(sweep / f"trial_{o}")}.get(rung)
                  for o in by_trial if o != t["trial_id"]]
        assert any(v is not None and v < mine for v in others)

    # Leaderboard and printed table: task columns and the two reference rows.
    with open(sweep / "leaderboard.csv", newline="") as f:
        header = next(csv.reader(f))
    assert {"best_task_price_mae", "task_price_hit", "task_distinct"} <= set(header)
    assert "constant answer  reference" in log and "base model       baseline" in log
    assert "task metrics on the eval prompts" in log


def test_constant_reference_and_verdict(task_sweep):
    sweep, log = task_sweep
    baseline = json.loads((sweep / "baseline.json").read_text())
    constant = baseline["constant_reference"]
    assert constant["answers"]["price"].startswith("Price is $")
    # The constant answer is the training median, scored on the same eval prompts.
    prices = sorted(float(json.loads(line)["completion"].split("$")[1])
                    for line in (EXAMPLES / "data/pricing_train.jsonl").read_text().splitlines())
    median = prices[(len(prices) - 1) // 2]
    assert float(constant["answers"]["price"].split("$")[1]) == pytest.approx(median)
    assert constant["metrics"]["task_price_mae"] > 0 and constant["metrics"]["task_distinct"] == 1
    # The base model's own answers are scored too (it knows prices, not the answer format).
    assert 0.0 <= baseline["task_price_parsed"] <= 1.0 and baseline["task_price_mae"] > 0
    best = json.loads((sweep / "best.json").read_text())
    verdict = best["verdict"]
    assert set(verdict["rows"]) == {"base model", "constant answer", "winner"}
    # Per-item values: the base model's and the constant answer's on the same items, and the
    # winner's beside its best checkpoint (not in progress.csv); their means are the metrics.
    items = Path(best["checkpoint_path"]) / "task_items.json"
    winner_items = json.loads(items.read_text())
    for kept, metrics in ((winner_items, best["task_metrics"]), (baseline["task_items"], baseline),
                          (constant["task_items"], constant["metrics"])):
        assert kept["digest"] == winner_items["digest"] and kept["items"] == baseline["task_samples"]
        assert sum(kept["values"]["task_price_mae"]) / kept["items"] == pytest.approx(
            metrics["task_price_mae"])
    assert all("task_items" not in row for row in _progress(items.parent.parent))
    # "Beats" is a paired comparison with its interval, printed; the custom scorer's metric has
    # no per-item values, so it is compared by the means and the verdict says so.
    against = {c["against"]: c for c in verdict["comparisons"]}
    assert set(against) == {"constant answer", "base model"}
    for comparison in against.values():
        assert comparison["metric"] == "task_price_mae" and comparison["items"] == 24
        assert comparison["low"] <= comparison["difference"] <= comparison["high"]
        assert comparison["sentence"] in log and "95 % CI" in comparison["sentence"]
    assert verdict["unpaired"] == ["task_score_answered"] and "compared by the means only" in log
    loses = against["constant answer"]["verdict"] != "better"
    assert any("on task_price_mae" in w for w in verdict["warnings"]) == loses
    # Losing is told apart: unreadable answers, within noise of the constant, or no better.
    if loses:
        assert not verdict["beats_constant"]
        parsed = best["task_metrics"]["task_price_parsed"]
        noise = against["constant answer"]["verdict"] == "not distinguishable"
        assert verdict["findings"][0] == ("answers_unparseable" if parsed < 0.5 else
                                          "not_distinguishable" if noise else "format_only")
        assert any(f"WARNING: {why}" in log for why in (
            "only the format learned", "answers unparseable",
            "not distinguishable from a constant answer on task_price_mae"))
    # The winner rule and the runner-up (the other finished trial), paired on the metric.
    assert best["winner_rule"].startswith("the better mean task_price_mae")
    runner_up = best["runner_up"]
    assert runner_up["trial_id"] != best["trial_id"] and runner_up["value"] >= best["value"]
    assert runner_up["comparison"]["items"] == 24
    assert runner_up["within_noise"] == (runner_up["comparison"]["verdict"] == "not distinguishable")
    assert f"winner rule: {best['winner_rule']}." in log
    assert runner_up["comparison"]["sentence"] in log
    # TensorBoard: the constant answer is a run; the examples are text.
    assert any((sweep / "constant_answer").glob("events.out.tfevents.*"))


def test_a_failing_scorer_errors_its_trial_once_and_the_sweep_goes_on(task_sweep):
    sweep, log = task_sweep
    status = json.loads((sweep / "status.json").read_text())
    errored = [t for t in status["trials"] if t["status"] == "errored"]
    assert len(errored) == 1, status["trials"]
    assert "the scorer flaky:score raised RuntimeError: boom on call 3" in errored[0]["error"]
    assert errored[0]["steps_run"] == 0  # it failed at its first evaluation
    finished = [t for t in status["trials"] if t["status"] != "errored"]
    assert len(finished) == 2 and "1 errored" in log
    # Its restarts (failure.max_retries) ended at once without training or scoring again:
    # the scorer ran twice for the baseline, once for the failure, then once per evaluation
    # of the other trials.
    evaluations = sum(len(_progress(sweep / f"trial_{t['trial_id']}")) for t in finished)
    assert int((sweep.parent.parent / "calls.txt").read_text()) == 3 + evaluations


def test_tensorboard_has_task_scalars_and_examples(task_sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sweep, _ = task_sweep
    best = json.loads((sweep / "best.json").read_text())
    run = EventAccumulator(str(sweep / f"trial_{best['trial_id']}"),
                           size_guidance={"tensors": 0, "scalars": 0})
    run.Reload()
    assert {"task/price_mae", "task/price_hit", "task/distinct"} <= set(run.Tags()["scalars"])
    texts = run.Tensors("task/examples")
    assert texts and "| prompt | reference | prediction |" in texts[-1].tensor_proto.string_val[0].decode()


def test_validation_of_task_metrics(tiny_model_dir, tmp_path, capsys):
    def validate(config):  # in this process: the same path as the command, without its start-up
        code = main(["validate", str(config)])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    bad_metric = write_config(tmp_path / "m.yaml", search={"metric": "task_price_ma"},
                              evaluation={"scorers": [PRICE]})
    code, out, err = validate(bad_metric)
    assert code == 2 and "Traceback" not in err
    assert "Did you mean 'task_price_mae'?" in err

    no_scorer = write_config(tmp_path / "n.yaml", search={"metric": "task_price_mae"})
    code, out, err = validate(no_scorer)
    assert code == 2 and "add an evaluation scorer" in err

    missing = write_config(tmp_path / "c.yaml", evaluation={"scorers": [
        {"type": "custom", "function": "no_such_scorers:f1", "metrics": {"f1": "max"}}]})
    code, out, err = validate(missing)
    assert code == 2 and "Traceback" not in err
    assert "evaluation.scorers[0].function = 'no_such_scorers:f1'" in err
    assert "cannot import module 'no_such_scorers'" in err

    (tmp_path / "scorers_here.py").write_text("NOT_A_FUNCTION = 3\n")
    not_callable = write_config(tmp_path / "d.yaml", evaluation={"scorers": [
        {"type": "custom", "function": "scorers_here:NOT_A_FUNCTION", "metrics": {"x": "max"}}]})
    code, out, err = validate(not_callable)
    assert code == 2 and "is a int, not a function" in err

    good = write_config(tmp_path / "g.yaml", search={"metric": "task_price_hit"},
                        evaluation={"scorers": [PRICE]})
    code, out, err = validate(good)
    assert code == 0, err
    assert "task_price_hit (max)" in out


def test_promotion_is_judged_on_the_task_metric(task_sweep, tmp_path):
    sweep, _ = task_sweep
    with HubServer(tokens={WRITE: "write"}, user="acme") as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": WRITE, "HF_HOME": str(tmp_path / "hf"),
               "HF_HUB_DISABLE_TELEMETRY": "1"}
        with ForkedCli(tmp_path, env) as cli:  # two promotions, torch and the rest imported once
            _promote_twice(cli, sweep, env, tmp_path)


def _promote_twice(cli: ForkedCli, sweep: Path, env: dict, tmp_path: Path) -> None:
    """The sweep's winner promoted, then a challenger judged against it on the task metric."""
    import shutil

    first = tmp_path / "first"
    shutil.copytree(sweep, first)
    proc = cli("promote", str(first), "--repo-id", "acme/task", env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    card = (first / "promoted" / "README.md").read_text()
    assert "### Task metrics" in card and "constant answer" in card
    assert "vs constant answer" in card and "95 % CI" in card and "winner rule: " in card
    assert not (first / "promoted" / "task_items.json").exists()  # evidence, not the adapter
    # A challenger with another adapter: the winner's other kept checkpoint.
    second = tmp_path / "second"
    shutil.copytree(sweep, second)
    best = json.loads((second / "best.json").read_text())
    rows = {int(r["step"]): float(r["task_price_mae"])
            for r in _progress(second / f"trial_{best['trial_id']}")}
    other = next(c for c in sorted((second / f"trial_{best['trial_id']}").glob("checkpoint_*"))
                 if c.name != Path(best["checkpoint_path"]).name)
    step = json.loads((other / "trainer_state.json").read_text())["global_step"]
    best.update(checkpoint_path=str(other), value=rows[step], step=step)
    (second / "best.json").write_text(json.dumps(best))
    shutil.rmtree(second / "promoted", ignore_errors=True)
    _as_on_another_machine(second, gone=tmp_path / "not-on-this-machine")
    proc = cli("promote", str(second), "--repo-id", "acme/task", env=env, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "champion   task_price_mae" in out and "challenger task_price_mae" in out
    record = json.loads((second / "promotions.jsonl").read_text().splitlines()[-1])
    assert record["metric"] == "task_price_mae" and record["mode"] == "min"
    # The gate is the paired comparison: better beyond noise on the same 24 items.
    paired = record["paired"]
    assert paired["items"] == 24 and paired["sentence"].startswith("price_mae: challenger ")
    assert paired["ours"] == pytest.approx(record["challenger_value"])
    assert paired["theirs"] == pytest.approx(record["champion"]["value"])
    assert paired["sentence"] in out and "item by item" in record["reason"]
    wins = (record["challenger_value"] < record["champion"]["value"]
            and paired["verdict"] == "better")
    assert record["verdict"] == ("promoted" if wins else "kept champion")
    assert math.isfinite(record["champion"]["value"])


def _as_on_another_machine(sweep: Path, *, gone: Path) -> None:
    """The sweep dir as promote finds it on a machine without the driver's files: its data
    files and the folders of its custom scorer module are at paths that do not exist there.
    It has to judge on the sweep's tokenized eval rows with the scorer's recorded source."""
    import yaml

    resolved = yaml.safe_load((sweep / "sweep.yaml").read_text())
    spec = json.loads((sweep / "spec.json").read_text())
    for split in ("train", "eval"):
        for data in (resolved["data"], spec["data"]):
            data[split]["path"] = str(gone / Path(data[split]["path"]).name)
    resolved["evaluation"]["scorer_path"] = spec["task_eval"]["search_path"] = [str(gone)]
    assert "flaky.py" in spec["task_eval"]["sources"]
    (sweep / "sweep.yaml").write_text(yaml.safe_dump(resolved))
    (sweep / "spec.json").write_text(json.dumps(spec))


def test_report_shows_the_answers_and_loss_against_the_task_metric(task_sweep):
    sweep, _ = task_sweep
    proc = cli("report", str(sweep), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = (sweep / "report" / "report.html").read_text()
    assert "<h2>Task metrics</h2>" in page and "constant answer" in page
    assert "vs constant answer" in page and "95 % CI" in page and "winner rule: " in page
    assert "The winner's answers" in page and "Price is $" in page
    assert (sweep / "report" / "loss_vs_task.png").is_file()
    assert "Eval loss against the task metric" in page
