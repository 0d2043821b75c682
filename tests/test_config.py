"""Schema and rule tests: for each rule, one config that breaks it and one that passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import UserError
from orchestrator.config.loading import load_config
from search_spaces import list_presets

from .conftest import EXAMPLES, write_config

pytestmark = pytest.mark.fast


def problems_of(tmp_path: Path, overrides: list[str] | None = None, **sections) -> list[str]:
    path = write_config(tmp_path / "sweep.yaml", **sections)
    try:
        load_config(path, overrides)
    except UserError as err:
        assert err.exit_code == 2
        return err.problems or [err.title]
    return []


def test_defaults_pass(tmp_path):
    assert problems_of(tmp_path) == []


@pytest.mark.parametrize(
    ("sections", "needle"),
    [
        ({"lora": {"r": 0}}, "lora.r = 0: Input should be greater than 0"),
        ({"training": {"learning_rate": 0}}, "training.learning_rate = 0"),
        ({"training": {"learning_rate": -1e-4}}, "greater than 0"),
        ({"lora": {"dropout": 1.5}}, "lora.dropout = 1.5"),
        ({"training": {"max_steps": "many"}}, "training.max_steps = 'many'"),
        ({"lora": {"rank": 8}}, "Did you mean 'lora.r'?"),
        ({"trainng": {"max_steps": 8}}, "Did you mean 'training'?"),
        ({"model": {"quantization": {"mode": "3bit"}}}, "model.quantization.mode = '3bit'"),
        ({"resources": {"gpu": 1.5}}, "resources.gpu = 1.5: a trial trains on one GPU"),
        ({"resources": {"gpu": 2}}, "resources.gpu = 2: a trial trains on one GPU"),
        ({"resources": {"gpu": 0.00004}}, "below Ray's resource granularity"),
        ({"scheduler": {"max_t": 10}}, "scheduler.max_t = 10 is below training.max_steps = 20"),
        ({"search_space": {"training.eval_steps": [5, 10]}}, "a sweep may not search"),
        ({"search": {"algorithm": "bayes"}}, "search.algorithm = 'bayes'"),
        ({"search": {"metric": "eval_accuracy"}}, "trials never report this metric"),
        ({"scheduler": {"grace_period": 50, "max_t": 20}}, "grace_period = 50 is greater than"),
        ({"scheduler": {"max_t": 100}}, "scheduler.max_t = 100 is greater than training.max_steps"),
        ({"search_space": {"lora.r": {"choice": []}}}, "needs a non-empty list"),
        ({"search_space": {"lora.r": {"choice": [0, 8]}}}, "the value 0 breaks the rule of lora.r"),
        ({"search_space": {"training.learning_rate": {"loguniform": [1e-3, 1e-5]}}},
         "needs low < high"),
        ({"search_space": {"training.learning_rate": {"loguniform": [0, 1e-3]}}}, "low > 0"),
        ({"search_space": {"lora.rank": {"choice": [8]}}}, "Did you mean 'lora.r'?"),
        ({"search_space": {"lora.r": {"choise": [8]}}}, "Did you mean 'choice'?"),
        ({"search_space": {"lora.alpha": [8, 16], "lora.alpha_ratio": [1, 2]}},
         "both searched"),
        ({"search_space": {"preset": "cpu-dmo"}}, "Did you mean 'cpu-demo'?"),
        ({"search": {"algorithm": "grid"},
          "search_space": {"training.learning_rate": {"loguniform": [1e-5, 1e-3]}}},
         "needs every search_space entry to be a choice"),
        ({"search": {"initial_points": [{"lora.r": 5}]}}, "not one of the choices"),
        ({"search_space": {"lora.r": [4, 8], "lora.dropout": [0.0, 0.1]},
          "search": {"initial_points": [{"lora.r": 8}]}}, "gives no value for lora.dropout"),
        ({"storage": {"name": "a/b"}}, "plain folder name"),
        ({"lora": {"target_modules": []}}, "at least one module"),
    ],
)
def test_each_rule_fails_with_its_message(tmp_path, sections, needle):
    found = problems_of(tmp_path, **sections)
    assert any(needle in p for p in found), found


@pytest.mark.parametrize(
    "sections",
    [
        {"lora": {"r": 1}},
        {"training": {"learning_rate": 1e-9}},
        {"resources": {"gpu": 0.5}},
        {"resources": {"gpu": 1}},
        {"resources": {"gpu": 0.0001}},
        {"scheduler": {"max_t": 10}, "training": {"max_steps": 10, "eval_steps": 5}},
        {"search_space": {"training.gradient_accumulation_steps": [1, 2]}},
        {"search_space": {"training.seed": [1, 2]}},  # allowed: a trial's data split follows it
        {"search": {"algorithm": "grid"}},
        {"search": {"algorithm": "random", "initial_points": [{"lora.r": 8}]}},
        {"scheduler": {"grace_period": 20, "max_t": 20}},
        {"search_space": {"preset": "cpu-demo", "lora.r": [2, 4]}},
        {"search_space": {"training.learning_rate": {"qloguniform": [1e-5, 1e-3, 1e-5]},
                          "lora.dropout": {"quniform": [0.0, 0.1, 0.05]},
                          "lora.r": {"qrandint": [8, 64, 8]},
                          "training.per_device_train_batch_size": {"int": [2, 8]}}},
        {"search": {"metric": "eval_mean_token_accuracy"}},
    ],
)
def test_passing_side_of_rules(tmp_path, sections):
    assert problems_of(tmp_path, **sections) == []


# What validate let through although it breaks a sweep (issue 29, item 8; and more than one
# GPU per trial, item 7): each breaking override with its message, and the override that fixes
# it. The config is write_config's: 20 steps, an evaluation every 10.
CADENCE = ["training.max_steps=200", "training.eval_steps=20", "evaluation.cadence=rungs",
           "evaluation.scorers=[{type: number, name: price}]"]
BREAKS_A_SWEEP = [
    (["resources.gpu=2"], "resources.gpu = 2: a trial trains on one GPU",
     ["resources.gpu=1"]),
    (["scheduler.max_t=10"], "scheduler.max_t = 10 is below training.max_steps = 20: ASHA "
     "stops every trial at step 10", ["scheduler.max_t=10", "training.max_steps=10"]),
    ([*CADENCE, "scheduler.grace_period=30"],
     "ASHA's rungs at steps 30, 60, 120 (scheduler.grace_period = 30, reduction_factor = 2) "
     "and an evaluation every training.eval_steps = 20: 30 is not an evaluation step",
     [*CADENCE, "scheduler.grace_period=40"]),
    ([*CADENCE, "scheduler.reduction_factor=1.5"], "67.5, 101.25, 151.875 are not evaluation steps",
     [*CADENCE, "scheduler.reduction_factor=3"]),
    (["search_space.training.max_steps={choice: [10, 20]}"],
     "search_space.training.max_steps: a setting a sweep may not search",
     ["search_space.training.learning_rate={choice: [0.0001, 0.001]}"]),
    (["search_space.training.eval_steps={choice: [5, 10]}"],
     "search_space.training.eval_steps: a setting a sweep may not search",
     ["search_space.training.gradient_accumulation_steps={choice: [1, 2]}"]),
]


@pytest.mark.parametrize(("breaking", "needle", "fixed"), BREAKS_A_SWEEP,
                         ids=lambda v: v if isinstance(v, str) else None)
def test_what_breaks_a_sweep_is_refused_by_validate(capsys, tmp_path, breaking, needle, fixed):
    from orchestrator.cli import main

    config = write_config(tmp_path / "sweep.yaml")
    code = main(["validate", str(config), *breaking])
    out = "".join(capsys.readouterr())
    assert code == 2 and needle in out, out
    assert "Fix:" in out and "Traceback" not in out
    load_config(config, fixed)  # the fix passes (validate's rules; pre-flight needs a model)


def test_a_forbidden_search_names_the_allowed_keys(tmp_path):
    from orchestrator.config.keys import NOT_SEARCHABLE, searchable_keys

    (problem,) = problems_of(tmp_path, search_space={"training.max_steps": [10, 20]})
    allowed = searchable_keys()
    assert "Searchable: " + ", ".join(allowed) in problem
    assert "lora.r" in allowed and "training.learning_rate" in allowed
    assert not set(NOT_SEARCHABLE) & set(allowed)
    assert "Fix: remove it from search_space and set it once, under training:" in problem


def test_all_problems_reported_together(tmp_path):
    found = problems_of(tmp_path, lora={"r": 0, "dropout": 2}, training={"learning_rate": 0},
                        search_space={"lora.r": {"choice": []}})
    assert len(found) >= 4, found


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  name_or_path: x\nlora:\n  r: [8,\n")
    with pytest.raises(UserError) as err:
        load_config(path)
    assert "line 5" in str(err.value) or "line 4" in str(err.value)


def test_unknown_key_names_its_line(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("lora:\n  r: 8\n  alpah: 16\n")
    with pytest.raises(UserError) as err:
        load_config(path)
    assert "typo.yaml line 3: lora.alpah: unknown key. Did you mean 'lora.alpha'?" in str(err.value)


def test_overrides_are_typed_by_the_schema(tmp_path):
    path = write_config(tmp_path / "sweep.yaml")
    cfg, derived = load_config(path, ["search.num_trials=32", "training.learning_rate=3e-4",
                                      "lora.target_modules=[q_proj,v_proj]",
                                      "search_space.lora.dropout={choice: [0.0, 0.1]}"])
    assert cfg.search.num_trials == 32
    assert cfg.training.learning_rate == pytest.approx(3e-4)
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert derived.domains["lora.dropout"].values == (0.0, 0.1)
    with pytest.raises(UserError) as err:
        load_config(path, ["search.num_trials=lots"])
    assert "search.num_trials = 'lots'" in str(err.value)


def test_mode_follows_the_metric(tmp_path):
    path = write_config(tmp_path / "s.yaml", search={"metric": "eval_mean_token_accuracy"})
    assert load_config(path)[1].mode == "max"
    path = write_config(tmp_path / "s.yaml", search={"metric": "eval_perplexity"})
    assert load_config(path)[1].mode == "min"


@pytest.mark.parametrize("config", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_example_validates(config):
    cfg, derived = load_config(config)
    assert derived.domains, "every example searches something"


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_validates(tmp_path, preset):
    assert problems_of(tmp_path, search_space={"preset": preset}) == []


def test_relative_data_paths_resolve_from_the_config_folder():
    cfg, derived = load_config(EXAMPLES / "demo_cpu.yaml")
    assert derived.train_path == str(EXAMPLES / "data" / "pricing_train.jsonl")


def test_help_and_validation_do_not_import_torch():
    """A config's validation imports neither torch nor Ray, except ``search_space: auto``
    (the demo's), which reads the model's layers from its config on torch's meta device: the
    demo is loaded here on its former preset."""
    import subprocess
    import sys

    code = ("import sys; from orchestrator.config.loading import load_config; "
            "load_config('examples/demo_cpu.yaml', ['search_space=cpu-demo']); "
            "from orchestrator.cli import _parser; "
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], cwd=EXAMPLES.parent, check=True, timeout=60)
