"""Bad input: one message naming the setting, rule, value and fix; exit 2; no traceback."""

from __future__ import annotations

import json

import pytest

from orchestrator.cli import main

from .conftest import cli, write_config


def run_main(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_malformed_yaml_via_the_real_cli(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora:\n  r: 8\n  dropout: [0.1\ntraining: {}\n")
    proc = cli("validate", str(bad), timeout=120)
    assert proc.returncode == 2
    assert "not valid YAML" in proc.stderr and "line" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_missing_config_file(capsys, tmp_path):
    code, out = run_main(capsys, "validate", str(tmp_path / "nope.yaml"))
    assert code == 2 and "does not exist" in out


def test_missing_dataset_file(capsys, tmp_path):
    cfg = write_config(tmp_path / "s.yaml", data={"train": str(tmp_path / "gone.jsonl"),
                                                  "eval": None})
    code, out = run_main(capsys, "validate", str(cfg))
    assert code == 2 and "gone.jsonl does not exist" in out and "data.train" in out


def test_unrecognised_columns_name_what_was_found_and_expected(capsys, tmp_path):
    data = tmp_path / "weird.jsonl"
    data.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    cfg = write_config(tmp_path / "s.yaml", data={"train": str(data), "eval": None})
    code, out = run_main(capsys, "validate", str(cfg))
    assert code == 2
    assert "question, answer" in out and "prompt, completion" in out and "messages" in out


def test_empty_dataset(capsys, tmp_path):
    data = tmp_path / "empty.csv"
    data.write_text("prompt,completion\n")
    cfg = write_config(tmp_path / "s.yaml", data={"train": str(data), "eval": None})
    code, out = run_main(capsys, "validate", str(cfg))
    assert code == 2 and "has no rows" in out


def test_target_group_that_matches_nothing_lists_the_modules(capsys, tmp_path):
    cfg = write_config(tmp_path / "s.yaml",
                       search_space={"lora.target_modules": {"choice": ["attention", ["c_attn"]]}})
    code, out = run_main(capsys, "validate", str(cfg))
    assert code == 2
    assert "search_space.lora.target_modules" in out and "c_attn" in out and "q_proj" in out


def test_model_that_is_not_a_causal_lm(capsys, tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    cfg = write_config(tmp_path / "s.yaml", model={"name_or_path": str(folder)})
    code, out = run_main(capsys, "validate", str(cfg))
    assert code == 2 and "could not be loaded as a causal LM" in out


def test_several_problems_in_one_report(capsys, tmp_path):
    cfg = write_config(tmp_path / "s.yaml", lora={"r": -1}, training={"learning_rate": 0},
                       search={"metric": "bleu"})
    code, out = run_main(capsys, "validate", str(cfg))
    assert code == 2 and "3 problem(s)" in out
    assert "lora.r = -1" in out and "training.learning_rate = 0" in out and "bleu" in out


def test_valid_config_passes(capsys):
    code, out = run_main(capsys, "validate", "examples/demo_cpu.yaml")
    assert code == 0 and "valid" in out and "targets attention: q_proj" in out


def test_impossible_resources_fail_fast_and_write_nothing(tmp_path):
    cfg = write_config(tmp_path / "s.yaml", resources={"gpu": 1},
                       storage={"path": str(tmp_path / "sweeps"), "name": "gpu-on-cpu"})
    proc = cli("run", str(cfg), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no node of the Ray cluster can run a trial" in proc.stderr
    assert "resources.gpu: 0" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "sweeps" / "gpu-on-cpu").exists()


@pytest.mark.parametrize("name", ["taken"])
def test_existing_sweep_name_is_refused(capsys, tmp_path, name):
    (tmp_path / "sweeps" / name).mkdir(parents=True)
    cfg = write_config(tmp_path / "s.yaml", storage={"path": str(tmp_path / "sweeps"), "name": name})
    code, out = run_main(capsys, "run", str(cfg))
    assert code == 2 and "already exists" in out


def test_max_length_too_short_is_a_clear_error_before_any_trial(tmp_path):
    cfg = write_config(tmp_path / "s.yaml", data={"max_length": 8},
                       storage={"path": str(tmp_path / "sweeps"), "name": "too-short"})
    proc = cli("run", str(cfg), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Fix: raise data.max_length" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "sweeps" / "too-short").exists()
