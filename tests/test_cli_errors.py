"""Bad input: one message naming the setting, rule, value and fix; exit 2; no traceback."""

from __future__ import annotations

import json

import pytest

from orchestrator.cli import main

from .conftest import EXAMPLES, cli, ray_started, write_config


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
    assert code == 0 and "valid" in out and "targets all-linear: q_proj" in out


def test_impossible_resources_fail_fast_and_write_nothing(capsys, tmp_path):
    cfg = write_config(tmp_path / "s.yaml", resources={"gpu": 1},
                       storage={"path": str(tmp_path / "sweeps"), "name": "gpu-on-cpu"})
    code, err = run_main(capsys, "run", str(cfg))
    assert code == 2, err[-2000:]
    assert "this machine has no GPU, and a local sweep runs here" in err
    assert "resources.gpu: 0" in err and "--address" in err
    assert "Traceback" not in err and not ray_started()
    assert not (tmp_path / "sweeps" / "gpu-on-cpu").exists()


def test_a_cluster_address_where_nothing_answers_is_said_at_once(capsys, tmp_path):
    """Ray retries such an address for minutes, printing its own log lines; the sweep says
    what is wrong within seconds, for run and for a Ray Client address alike."""
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write_config(tmp_path / "s.yaml", storage={"path": str(tmp_path / "sweeps")})
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        code, err = run_main(capsys, "run", str(cfg), "--address", address)
        assert code == 2, err[-2000:]
        assert f"--address {address}: nothing answers at 127.0.0.1:{port}" in err, err
        assert "Fix:" in err and "Traceback" not in err and not ray_started()


@pytest.mark.parametrize("name", ["taken"])
def test_existing_sweep_name_is_refused(capsys, tmp_path, name):
    (tmp_path / "sweeps" / name).mkdir(parents=True)
    cfg = write_config(tmp_path / "s.yaml", storage={"path": str(tmp_path / "sweeps"), "name": name})
    code, out = run_main(capsys, "run", str(cfg))
    assert code == 2 and "already exists" in out
    assert "token lengths (builtin:tiny-llama tokenizer" in out  # run logs pre-flight's table


def test_max_length_too_short_is_a_clear_error_before_any_trial(capsys, tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path / "s.yaml", data={"max_length": 8},
                       storage={"path": str(tmp_path / "sweeps"), "name": "too-short"})
    code, out = run_main(capsys, "run", str(cfg))
    assert code == 2, out[-2000:]
    assert "Fix: set data.max_length: 48 or more" in out and "Traceback" not in out
    # Found by pre-flight, with the model's tokenizer: no Ray, no baseline.
    assert "pre-flight found" in out and "baseline" not in out and not ray_started()
    assert not (tmp_path / "sweeps" / "too-short").exists()


def _pricing_rows(n: int) -> list[str]:
    return (EXAMPLES / "data" / "pricing_train.jsonl").read_text().splitlines()[:n]


def test_corrupt_dataset_rows_are_named_by_number(capsys, tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(_pricing_rows(3) + ['{"prompt": "x", "completion": ']
                                + _pricing_rows(2)) + "\n")
    empty = tmp_path / "empty_completion.jsonl"
    empty.write_text("\n".join(_pricing_rows(2) + ['{"prompt": "x\\n", "completion": null}'])
                     + "\n")
    cfg = write_config(tmp_path / "s.yaml", data={"train": str(broken), "eval": str(empty)})
    code, out = run_main(capsys, "validate", str(cfg))
    assert code == 2 and "Traceback" not in out
    assert f"data.train: the data file {broken} could not be read: line 4 is not valid JSON" in out
    assert f"data.eval: {empty}, row 3: 'completion' is None" in out
    assert out.count("Fix:") >= 2


def test_messages_without_a_chat_template_is_refused(capsys, tmp_path, tiny_model_dir):
    import shutil

    model = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, model)
    (model / "chat_template.jinja").unlink()  # a base model without a chat template
    rows = [json.loads(line) for line in _pricing_rows(8)]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": r["prompt"].strip()},
        {"role": "assistant", "content": r["completion"]}]}) + "\n" for r in rows))
    cfg = write_config(tmp_path / "s.yaml", model={"name_or_path": str(model)},
                       data={"train": str(data), "eval": str(data)})
    code, out = run_main(capsys, "validate", str(cfg))
    assert code == 2 and "Traceback" not in out
    assert "data.format = messages, but the tokenizer of" in out and "no chat template" in out


def test_unwritable_storage_path(capsys, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    cfg = write_config(tmp_path / "s.yaml", storage={"path": str(a_file / "sweeps")})
    code, out = run_main(capsys, "validate", str(cfg))
    assert code == 2 and "Traceback" not in out
    assert f"storage.path = '{a_file / 'sweeps'}': {a_file} is a file" in out and "Fix:" in out
