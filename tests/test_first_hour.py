"""What a new user gets wrong in the first hour is caught by ``validate`` with one message at
its cause (exit 2, no traceback), and the command line follows conventions."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from orchestrator.cli import _parser, main

from .conftest import EXAMPLES, ROOT, cli, write_config

pytestmark = pytest.mark.fast


def validate(capsys, config, *overrides) -> tuple[int, str]:
    code = main(["validate", str(config), *overrides])
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "Traceback" not in out
    return code, out


def test_a_section_written_twice_is_an_error_at_the_second(capsys, tmp_path):
    config = tmp_path / "s.yaml"
    config.write_text(write_config(tmp_path / "base.yaml").read_text()
                      + "training:\n  max_steps: 50\n")
    code, out = validate(capsys, config)
    assert code == 2 and "training is given a second time (first on line" in out
    assert out.count("given a second time") == 1  # not once more per key inside it


def test_a_tab_in_the_indentation_is_called_a_tab(capsys, tmp_path):
    config = tmp_path / "s.yaml"
    config.write_text("model:\n\tname_or_path: builtin:tiny-llama\n")
    code, out = validate(capsys, config)
    assert code == 2 and "a tab in the indentation" in out and "line 2" in out


def test_training_data_is_required(capsys, tmp_path):
    config = tmp_path / "s.yaml"
    config.write_text("model:\n  name_or_path: builtin:tiny-llama\ndata:\n  max_length: 64\n")
    code, out = validate(capsys, config)
    assert code == 2 and "data.train is required and not given" in out and "Fix: add" in out


@pytest.mark.parametrize("path", ["/models/llama-3-8b", "./my-model"])
def test_a_missing_local_model_is_no_such_folder(capsys, tmp_path, path):
    code, out = validate(capsys, write_config(tmp_path / "s.yaml"),
                         f"model.name_or_path={path}")
    assert code == 2 and f"{path!r}: no such folder" in out
    assert "Repo id must be" not in out


def test_data_paths_are_files_of_a_known_type(capsys, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.txt").write_text("a line\n")
    config = write_config(tmp_path / "s.yaml")
    code, out = validate(capsys, config, "data.train=data/train.txt")
    assert code == 2 and "not a file type qlora-sweep reads" in out and ".jsonl" in out
    code, out = validate(capsys, config, "data.train=data")
    assert code == 2 and "is a folder, not a data file" in out
    assert "Hub dataset" not in out


def test_an_empty_search_space_is_an_error_unless_one_trial(capsys, tmp_path):
    config = write_config(tmp_path / "s.yaml", search_space={}, search={"num_trials": 4})
    code, out = validate(capsys, config)
    assert code == 2 and "search_space is empty: each of the 4 trials" in out
    code, _ = validate(capsys, config, "search.num_trials=1")
    assert code == 0


def test_a_bad_space_is_reported_once_not_again_through_initial_points(capsys):
    for override in ("search_space.preset=nope", "search_space.lora.r={choice: []}"):
        code, out = validate(capsys, EXAMPLES / "demo_cpu.yaml", override)
        assert code == 2 and "1 problem(s)" in out and "initial_points" not in out, out
        assert "Fix:" in out


def test_every_subcommand_and_flag_has_help():
    import argparse

    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, sub in commands.choices.items():
        if not sub.description:
            missing.append(f"{name}: no description")
        missing += [f"{name} {a.dest}: no help" for a in sub._actions
                    if not a.help and not isinstance(a, argparse._HelpAction)]
    assert not missing, missing


def test_version_and_run_without_a_config():
    version = cli("--version", timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("qlora-sweep ")
    bare = cli("run", timeout=60)
    assert bare.returncode == 2 and "required: config" in bare.stderr
    assert "key=value" not in bare.stderr.splitlines()[-1]  # overrides are optional


def test_a_closed_pipe_ends_quietly(tmp_path):
    """``qlora-sweep ... | head -1``: no BrokenPipeError traceback when the reader goes away.
    The output (a 15,000-value choice, about 90 KB, printed by validate) is larger than a
    pipe's buffer (64 KB), so the writer is still writing when ``head`` exits."""
    config = write_config(tmp_path / "big.yaml",
                          search_space={"training.seed": {"choice": list(range(15000))}})
    proc = subprocess.run(f"{sys.executable} -m orchestrator validate {config} | head -1",
                          shell=True, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout == f"{config}: valid\n"
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_local_resources_that_can_never_fit_are_caught_by_validate(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # this machine, as if it had no GPU
    config = write_config(tmp_path / "s.yaml")
    cores = __import__("os").cpu_count()
    code, out = validate(capsys, config, f"resources.cpu={cores + 6}", "resources.gpu=1")
    assert code == 2 and "the sweep cannot run on this machine" in out
    assert f"more cores than this machine has ({cores})" in out and "no GPU" in out
    assert out.count("pass --address") == 2
    # for a cluster (--address) the request is checked against the cluster by run, not here
    code, out = validate(capsys, config, f"resources.cpu={cores + 6}", "resources.gpu=1",
                         "--address", "auto")
    assert code == 0 and "cannot run on this machine" not in out


def test_a_value_from_the_command_line_is_blamed_on_the_command_line(capsys, tmp_path):
    config = write_config(tmp_path / "s.yaml")
    code, out = validate(capsys, config, "training.learning_rate=-1")
    assert code == 2 and "s.yaml line" not in out
    assert "command line (training.learning_rate=-1): training.learning_rate = -1" in out
    code, out = validate(capsys, config, "model.name_or_path=./nope")  # found in pre-flight
    assert code == 2 and "command line (model.name_or_path=./nope): model.name_or_path" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("max_steps:", "max_steps: -5 #"))
    code, out = validate(capsys, bad)
    assert code == 2 and "bad.yaml line" in out and "training.max_steps = -5" in out


def test_every_fix_says_what_to_change_not_what_the_setting_is(capsys, tmp_path):
    config = write_config(tmp_path / "s.yaml")
    code, out = validate(capsys, config, "training.learning_rate=-1", "scheduler.type=hyper",
                         "training.max_steps=abc", "model.quantization=8bit")
    assert code == 2 and out.count("Fix:") == 4 and " is: " not in out
    assert "Fix: set training.learning_rate to a number greater than 0" in out
    assert "Fix: set scheduler.type to 'asha' or 'none'" in out
    assert "Fix: write a whole number for training.max_steps" in out
    assert "Fix: write model.quantization as a mapping of keys (mode," in out


def test_an_override_split_by_the_shell_gets_a_quoting_hint(capsys):
    # what `qlora-sweep validate demo.yaml search_space.lora.r={choice: [8, 16]}` passes
    code, out = validate(capsys, EXAMPLES / "demo_cpu.yaml",
                         "search_space.lora.r={choice:", "[8,", "16]}")
    assert code == 2 and "arrived as 3 arguments: the shell split it" in out
    assert "Fix: quote it: 'search_space.lora.r={choice: [8, 16]}'" in out
    assert "not key=value" not in out  # the pieces are not reported one by one


def test_a_corrupt_jsonl_line_is_reported_once_by_its_line_number(tmp_path):
    data = tmp_path / "train.jsonl"
    good = (EXAMPLES / "data" / "pricing_train.jsonl").read_text().splitlines()[:5]
    data.write_text("\n".join(good) + '\n{"prompt": "x", "completion": "y"\n')
    proc = cli("validate", str(write_config(tmp_path / "s.yaml")), f"data.train={data}",
               timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "line 6 is not valid JSON" in out
    assert "pyarrow" not in out and "row 5" not in out, out


def test_an_unknown_key_under_a_scorer_gets_its_section_keys_and_a_suggestion(capsys, tmp_path):
    """A typo inside a list entry (a scorer) is named with its index, the keys of that entry
    are listed, and the closest one suggested (it said "known keys here: ." before)."""
    config = write_config(tmp_path / "s.yaml",
                          evaluation={"scorers": [{"type": "label", "lables": ["a", "b"]}]})
    code, out = validate(capsys, config)
    assert code == 2, out
    assert "evaluation.scorers[0].lables: unknown key" in out
    assert "Did you mean 'evaluation.scorers[0].labels'?" in out
    assert "known keys here: type, name, pattern, tolerance, labels" in out


@pytest.mark.parametrize("typo, meant", [("scheduler.grace=30", "scheduler.grace_period"),
                                         ("storage.keep=1", "storage.keep_checkpoints"),
                                         ("training.lr=0.001", "training.learning_rate")])
def test_a_shortened_key_is_suggested_by_the_name_it_begins(capsys, tmp_path, typo, meant):
    code, out = validate(capsys, write_config(tmp_path / "s.yaml"), typo)
    assert code == 2 and f"Did you mean '{meant}'?" in out, out


def test_data_columns_map_a_files_own_column_names(capsys, tmp_path):
    """``data.columns`` reads question/answer rows as prompt/completion; a mapped column the
    file lacks is named with the file's columns and the closest one."""
    rows = [{"question": f"Capital of country {i}?", "answer": f"City {i}"} for i in range(6)]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = write_config(tmp_path / "s.yaml", data={"train": str(data), "eval": None,
                                                     "columns": {"prompt": "question",
                                                                 "completion": "answer"}})
    code, out = validate(capsys, config)
    assert code == 0 and "(format: prompt_completion)" in out, out
    code, out = validate(capsys, config, "data.columns={prompt: questoin, completion: answer}")
    assert code == 2 and "has columns question, answer" in out, out
    assert "prompt: questoin (did you mean question?)" in out
    code, out = validate(capsys, config, "data.columns={promt: question}")
    assert code == 2 and "did you mean prompt for promt?" in out, out

    from trainables.data import load_splits

    train, evalset, fmt = load_splits({"train": {"path": str(data), "local": True,
                                                 "columns": {"prompt": "question",
                                                             "completion": "answer"}},
                                       "eval": None, "eval_fraction": 0.34}, seed=0)
    assert fmt == "prompt_completion" and train.column_names == ["prompt", "completion"]
    # A file whose own "prompt" column holds the answers: the names can trade places.
    from trainables.data import load_source

    swapped = tmp_path / "swapped.jsonl"
    swapped.write_text(json.dumps({"text": "Capital of France?", "prompt": "Paris"}) + "\n")
    ds = load_source({"path": str(swapped), "local": True,
                      "columns": {"prompt": "text", "completion": "prompt"}})
    assert ds[0] == {"prompt": "Capital of France?", "completion": "Paris"}
    got = list(train["completion"]) + list(evalset["completion"])
    assert sorted(got) == sorted(r["answer"] for r in rows)


def test_a_fixed_single_training_is_valid_with_every_search_algorithm(capsys, tmp_path):
    config = write_config(tmp_path / "s.yaml", search_space={}, search={"num_trials": 1})
    for algorithm in ("optuna", "random", "grid"):
        code, out = validate(capsys, config, f"search.algorithm={algorithm}")
        assert code == 0 and "1 trial," in out, out


def test_libraries_outside_the_tested_versions_are_named():
    """The tested versions are this environment's (the suite runs on them), and pyproject's
    ranges start at them; another minor version is named with the tested one."""
    import re
    import tomllib

    from trainables.compat.versions import TESTED, untested

    assert untested() == []
    assert untested({"ray": "2.61.0", "trl": "1.16.3", "torch": "2.13.0+cu124"}) == [
        "ray 2.61.0 (tested: 2.60.x)"]
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lower = {re.split(r"[\[<>=]", d)[0]: re.search(r">=([0-9.]+)", d).group(1) for d in deps}
    for name, tested in TESTED.items():
        if name != "torch":  # a GPU user's own CUDA build of torch may be older
            assert lower[name] == tested, (name, lower[name], tested)


def _broken_sweep_dirs(root):
    """Sweep dirs a user may hand a command: none, an empty folder, and files cut short."""
    (root / "empty").mkdir()
    cut = root / "cut"
    cut.mkdir()
    (cut / "sweep.yaml").write_text("model: {name_or_path: builtin:tiny-llama\ndata: [")
    partial = root / "partial"
    partial.mkdir()
    (partial / "sweep.yaml").write_text("model: {name_or_path: builtin:tiny-llama}\n")
    status = root / "status"
    status.mkdir()
    (status / "sweep.yaml").write_text(
        "model: {name_or_path: builtin:tiny-llama}\ndata: {train: x.jsonl}\n"
        "search: {metric: eval_loss, num_trials: 1}\n")
    (status / "status.json").write_text('{"state": "running", "trials": [')
    return {"missing": root / "missing", "empty": root / "empty", "cut": cut,
            "partial": partial, "status": status}


@pytest.mark.parametrize("command", ["status", "report", "resume", "promote", "tensorboard",
                                     "generate"])
def test_every_command_on_a_broken_sweep_dir_says_what_is_wrong_without_a_traceback(
        capsys, tmp_path, command):
    """Each documented command that takes a sweep dir, on one that is missing, empty, or has
    a file cut short: one message with a Fix, a non-zero exit, no traceback (a cut sweep.yaml
    or status.json raised yaml's or json's own error before)."""
    for name, folder in _broken_sweep_dirs(tmp_path).items():
        argv = [command, str(folder)] + (["a prompt"] if command == "generate" else [])
        code = main(argv)
        captured = capsys.readouterr()
        out = captured.out + captured.err
        assert code != 0 and "Traceback" not in out, (name, out)
        assert "Fix:" in captured.err, (name, out)


def test_a_sweep_that_ran_is_not_refused_by_the_rules_that_protect_new_sweeps(tmp_path):
    """resume and promote read the sweep's own sweep.yaml: a sweep made before the rules
    that refuse max_t below max_steps or a searched eval_steps keeps its resume and its
    promotion (what it made is not lost); a new sweep with that config is refused."""
    from orchestrator.config.loading import load_config
    from orchestrator.errors import UserError

    config = write_config(tmp_path / "sweep.yaml", scheduler={"max_t": 10},
                          search_space={"training.eval_steps": {"choice": [5, 10]}})
    with pytest.raises(UserError) as refused:
        load_config(config)
    assert "scheduler.max_t = 10 is below training.max_steps = 20" in str(refused.value.problems)
    assert "a setting a sweep may not search" in str(refused.value.problems)
    cfg, plan = load_config(config, existing=True)
    assert plan.existing and plan.max_t == 10 and "training.eval_steps" in plan.domains
