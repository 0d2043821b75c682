"""A real sweep on local Ray (the shared ``smoke_sweep``: Optuna + ASHA, a NaN trial): the whole
sweep-dir contract."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import yaml

from benchmarks.console_noise import foreign
from orchestrator.cli import main

from .conftest import EXAMPLES, SMOKE_LR, cli


def test_real_sweep_writes_the_contract(smoke_sweep, tiny_model_dir):
    good, also_good, nan = SMOKE_LR["good"], SMOKE_LR["also_good"], SMOKE_LR["nan"]
    out = smoke_sweep.log
    sweep = smoke_sweep.path

    # The sweep-dir contract.
    for name in ("sweep.yaml", "baseline.json", "leaderboard.csv", "best.json", "optuna.journal"):
        assert (sweep / name).is_file(), name
    resolved = yaml.safe_load((sweep / "sweep.yaml").read_text())
    assert resolved["storage"]["name"] == "smoke"
    # resources.gpu: auto found no GPU: trials on CPU, each reserving its estimated RAM; the
    # sweep's config keeps "auto", so a resume on other machines estimates again.
    assert "resources.gpu = auto: no GPU in the cluster, so trials run on CPU" in out
    assert "GiB of RAM reserved per trial" in out and resolved["resources"]["gpu"] == "auto"
    assert Path(resolved["data"]["train"]["path"]).is_absolute()
    # Pre-flight's token lengths, per split, before any trial.
    assert "token lengths (builtin:tiny-llama tokenizer; data.max_length = 64" in out
    assert out.index("token lengths") < out.index("evaluating the base model")

    rows = list(csv.DictReader(open(sweep / "leaderboard.csv")))
    assert len(rows) == 5
    assert set(rows[0]) >= {"trial_id", "status", "training.learning_rate",
                            "lora.target_modules", "best_eval_loss", "best_step", "steps_run"}
    statuses = {r["status"] for r in rows}
    assert statuses <= {"completed", "stopped_early", "errored"}
    by_lr = {}
    for r in rows:
        by_lr.setdefault(float(r["training.learning_rate"]), []).append(r)
    assert any(r["status"] == "stopped_early" for r in rows), rows  # ASHA stopped one
    assert [r["status"] for r in by_lr[nan]] and all(r["status"] == "errored" for r in by_lr[nan])
    assert "diverged" in (sweep / "leaderboard.csv").read_text()
    # Why, in the trial's folder in the storage, where a restart (on any node) finds it.
    for r in by_lr[nan]:
        assert "training diverged" in (sweep / f"trial_{r['trial_id']}" / "diverged.txt").read_text()
    assert any(r["status"] == "completed" for r in rows)

    baseline = json.loads((sweep / "baseline.json").read_text())
    best = json.loads((sweep / "best.json").read_text())
    assert set(best) == {"trial_id", "config", "metric", "mode", "value", "step",
                         "checkpoint_path", "baseline_value", "winner_rule", "runner_up"}
    # The winner rule, and the runner-up beside the winner: a loss has no per-item values, so
    # whether the two differ beyond noise is not known, and the sweep says so.
    assert best["winner_rule"].startswith("the better mean eval_loss (lower is better)")
    runner_up = best["runner_up"]
    assert runner_up["trial_id"] != best["trial_id"] and runner_up["value"] >= best["value"]
    assert runner_up["comparison"] is None and runner_up["within_noise"] is None
    assert f"winner rule: {best['winner_rule']}." in out
    assert (f"the runner-up, trial {runner_up['trial_id']} (eval_loss {runner_up['value']:.4g}), "
            f"cannot be compared with the winner item by item") in out
    assert best["metric"] == "eval_loss" and best["mode"] == "min"
    assert best["config"]["training.learning_rate"] in (good, also_good)
    assert best["baseline_value"] == baseline["eval_loss"]
    assert best["value"] < baseline["eval_loss"] - 1.0
    assert best["value"] == min(float(r["best_eval_loss"]) for r in rows if r["best_eval_loss"])

    # The best checkpoint (best over the trial's history) is adapter-only and loads.
    ckpt = Path(best["checkpoint_path"])
    assert ckpt.is_dir() and str(ckpt).startswith(str(sweep))
    assert (ckpt / "adapter_model.safetensors").is_file()
    assert not (ckpt / "model.safetensors").exists()
    trial_dir = ckpt.parent
    assert (trial_dir / "progress.csv").is_file() and (trial_dir / "params.json").is_file()
    assert len(list(trial_dir.glob("checkpoint_*"))) <= 2  # keep_checkpoints

    # The data was tokenized once, by the baseline; no trial tokenized it again. Trials ran
    # in reused workers that kept the base model (5 trials, 2 at a time).
    reports = [r for f in sweep.glob("trial_*/progress.csv") for r in csv.DictReader(open(f))]
    assert reports and all(r["data_tokenized"] == "0" for r in reports)
    assert any(r["warm_start"] == "1" for r in reports)

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), ckpt)
    assert model.peft_config["default"].target_modules

    # The console: where the sweep is and how to watch it, first; then a line per trial start
    # and end in the sweep's words, no Ray status table, and one results table.
    assert out.index(f"watch it:  qlora-sweep tensorboard {sweep}") < out.index(" started: lr=")
    assert f"qlora-sweep status {sweep} --watch" in out
    assert "== Status ==" not in out and "TERMINATED" not in out and "Result logdir" not in out
    assert "Token authentication is enabled" not in out and "gemm_4bit_forward" not in out
    assert len(set(re.findall(r"^trial (\w+) started: lr=", out, re.M))) == 5
    assert "Traceback" not in out and "A new study created" not in out
    assert re.search(r"^trial \w+ (completed|stopped early at step \d+): best eval_loss",
                     out, re.M)
    assert re.search(r"^trial \w+ errored: ", out, re.M)  # the NaN trial
    assert sum(line.startswith("#  trial") for line in out.splitlines()) == 1
    # Not one line the project did not write (benchmarks/console_noise.py counts the same
    # on the demo), though one trial diverged and was restarted.
    assert foreign(out, smoke_sweep.err) == [], smoke_sweep.err[-3000:]

    # The printed leaderboard shows the baseline row and the best adapter's path.
    assert "base model" in out and f"best adapter: {ckpt}" in out and "wall time" in out


def test_generate_answers_from_a_checkpoint_in_its_training_prompt_format(smoke_sweep, tmp_path,
                                                                          capsys):
    """Every checkpoint carries the prompt format it was trained with (the demo's prompts end
    in a newline), so ``generate`` on a checkpoint folder asks as training did: with several
    prompts and a JSONL file, the model loaded once, one JSON line per answer."""
    best = json.loads((smoke_sweep.path / "best.json").read_text())
    checkpoint = Path(best["checkpoint_path"])
    fmt = json.loads((checkpoint / "prompt_format.json").read_text())
    assert fmt == {"data_format": "prompt_completion", "prompt_suffix": "\n"}
    asked = ["How much does this cost? A steel chair, quality 2 of 5.",
             "What is the price of this item? A pine table, quality 3 of 5.",
             "How much does this cost? An oak desk, quality 4 of 5."]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": asked[2]}) + "\n")
    # In this process (torch is loaded already): the command, not the interpreter, is tested.
    code = main(["generate", str(checkpoint), asked[0], asked[1], "--file", str(prompts),
                 "--max-new-tokens", "10"])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["prompt"] for r in rows] == asked
    assert all(r["completion"].strip() for r in rows), rows
    code = main(["generate", str(checkpoint), asked[0], "--max-new-tokens", "10"])
    out, err = capsys.readouterr()
    assert code == 0 and out.strip() == rows[0]["completion"].strip(), err[-3000:]


def _other_llama(path: Path, tokenizer_from: Path) -> Path:
    """A random Llama of another width than the builtin one, with the builtin tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2,
                         vocab_size=len(tokenizer), max_position_embeddings=128)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_generate_on_a_base_model_of_another_shape_is_one_message(smoke_sweep, tmp_path, capsys,
                                                                  tiny_model_dir):
    """An adapter on a model it does not fit: one message naming the layer, both shapes and
    the model it was trained on, not torch's 84-line size-mismatch traceback."""
    best = json.loads((smoke_sweep.path / "best.json").read_text())
    other = _other_llama(tmp_path / "other-llama", tiny_model_dir)
    code = main(["generate", best["checkpoint_path"], "A steel desk?", "--base-model",
                 str(other), "--max-new-tokens", "4"])
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert code != 0 and "Traceback" not in out, out[-3000:]
    assert f"--base-model {other}: the adapter does not fit this model" in captured.err, out
    assert "the adapter has shape" in out and "it was trained on builtin:tiny-llama" in out
    assert "Fix:" in out


def test_validate_of_the_demo_prints_only_our_lines():
    proc = cli("validate", str(EXAMPLES / "demo_cpu.yaml"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert foreign(proc.stdout, proc.stderr) == [] and proc.stdout.startswith(
        f"{EXAMPLES / 'demo_cpu.yaml'}: valid")


def test_optuna_is_told_what_each_trial_was(smoke_sweep):
    """The fidelity fix, read back from the sweep's own Optuna storage: a trial ASHA stopped
    (or that diverged) is PRUNED with its evaluations as intermediate values at their
    training steps; a trial that reached max_steps is COMPLETE with its best value, not its
    last (Ray's OptunaSearch told every trial COMPLETE with its last result)."""
    import math

    import optuna

    from orchestrator.run.tuner import optuna_storage

    sweep = smoke_sweep.path
    storage = optuna_storage(str(sweep))
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    told = list(study.trials)
    assert len(told) == 5
    states = {"PRUNED": 0, "COMPLETE": 0, "FAIL": 0}
    for trial in sorted(sweep.glob("trial_*")):
        params = json.loads((trial / "params.json").read_text())
        if not (trial / "progress.csv").is_file():  # errored before its first evaluation
            assert (trial / "error.txt").is_file()
            continue
        rows = [r for r in csv.DictReader(open(trial / "progress.csv")) if r.get("eval_loss")]
        reported = {int(r["step"]): float(r["eval_loss"]) for r in rows
                    if math.isfinite(float(r["eval_loss"]))}
        # TPE may propose the same settings twice (and the same seed trains them alike): an
        # Optuna trial with these settings and these intermediate values at these steps
        matching = [t for t in told if t.params == params and t.intermediate_values == reported]
        assert matching, (trial.name, params, reported)
        ot = matching[0]
        told.remove(ot)
        last = max(int(r["step"]) for r in rows)
        if last < 30:  # stopped by ASHA
            assert ot.state == optuna.trial.TrialState.PRUNED, trial.name
            # Optuna files a pruned trial under its last intermediate value
            assert ot.value == reported[max(reported)]
        else:
            assert ot.state == optuna.trial.TrialState.COMPLETE, trial.name
            assert ot.value == min(reported.values())
        states[ot.state.name] += 1
    # the trial that errored (NaN loss at its first step) failed
    assert [t.state.name for t in told] == ["FAIL"]
    assert states["PRUNED"] >= 1 and states["COMPLETE"] >= 1, states
