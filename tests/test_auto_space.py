"""``search_space: auto``: the space built from the model and the data — the learning-rate centre
by the stated rule, target groups the model has, the rank cap, the data's effect on dropout —
explicit entries over it, its errors, what ``validate`` prints, and the space a sweep ran with
written into its sweep.yaml."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from orchestrator.config.loading import load_config
from orchestrator.errors import UserError
from search_spaces.auto import DataFacts, build_space, sci
from search_spaces.lr_rule import EXPONENTS, lora_lr, lr_centre
from search_spaces.targets import resolve_target
from trainables.model import linear_module_names

from .conftest import EXAMPLES, cli, write_config

# 240 steps x batch 8 = 1920 examples per trial over the demo's 1600 training rows (1.2 epochs)
LONG = {"max_steps": 240, "eval_steps": 20, "per_device_train_batch_size": 8}


def _load(tmp_path, **sections):
    return load_config(write_config(tmp_path / "sweep.yaml", **sections))


def _problems(tmp_path, **sections) -> list[str]:
    with pytest.raises(UserError) as err:
        _load(tmp_path, **sections)
    return err.value.problems


def _round3(x: float) -> float:
    return float(f"{x:.3g}")


def _save(config, tmp_path, name) -> str:
    path = tmp_path / name
    config.save_pretrained(path)
    return str(path)


# ----------------------------------------------------------------- the rule (pure, fast)

@pytest.mark.fast
def test_the_lr_rule_matches_what_it_was_calibrated_on():
    # LoRA Without Regret: 3e-4 was the best LoRA LR of Llama-3.1-8B (hidden 4096)
    assert lora_lr(4096, "llama") == pytest.approx(5e-4 * (2000 / 4096) ** 0.781)
    assert lora_lr(4096, "llama") == pytest.approx(3e-4, rel=0.06)
    assert lora_lr(2000, "qwen") == pytest.approx(5e-4)  # the reference width: 10 x 5e-5
    assert lr_centre({"model_type": "qwen3", "hidden_size": 4096}).exponent == EXPONENTS["qwen"]
    mistral = lr_centre({"model_type": "mistral", "hidden_size": 4096})
    assert (mistral.family, mistral.basis) == ("llama", "architecture")
    neox = lr_centre({"model_type": "gpt_neox", "hidden_size": 512})
    assert (neox.family, neox.basis) == ("llama", "fallback")
    assert "no calibrated rule for gpt_neox" in neox.rule()
    assert lr_centre({"model_type": "gpt2", "n_embd": 768}).hidden_size == 768
    assert lr_centre({"model_type": "llava", "text_config": {"model_type": "llama",
                                                             "hidden_size": 4096}}).hidden_size \
        == 4096
    with pytest.raises(ValueError, match="no hidden size"):
        lr_centre({"model_type": "llama"})


@pytest.mark.fast
def test_the_rank_ladder_is_capped_and_never_empty():
    names = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj"]
    ranks = {h: build_space({"model_type": "llama", "hidden_size": h}, names)
             .entries["lora.r"]["choice"] for h in (4096, 64, 40, 16)}
    assert ranks == {4096: [8, 16, 32], 64: [8, 16], 40: [8], 16: [4]}


@pytest.mark.fast
def test_the_data_decides_dropout():
    names = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj"]
    config = {"model_type": "llama", "hidden_size": 192}
    once = build_space(config, names, DataFacts(train_rows=1600, examples_per_trial=160))
    again = build_space(config, names, DataFacts(train_rows=1600, examples_per_trial=1920))
    unknown = build_space(config, names, DataFacts(train_rows=None, examples_per_trial=160))
    assert once.entries["lora.dropout"] == {"choice": [0.0, 0.05]}
    assert again.entries["lora.dropout"] == {"choice": [0.0, 0.05, 0.1]}
    assert unknown.entries["lora.dropout"] == {"choice": [0.0, 0.05, 0.1]}
    assert "1.2 epochs" in again.reasons["lora.dropout"]


# ------------------------------------------------- the space on three architectures (fast)

@pytest.mark.fast
def test_auto_on_the_builtin_model(tmp_path):
    from trainables import tiny_llama

    cfg, plan = _load(tmp_path, search_space="auto", training=LONG, search={"num_trials": 12})
    hidden = tiny_llama.RECIPE["hidden_size"]
    centre = _round3(5e-5 * 10 * (2000 / hidden) ** 0.781)
    # the demo's known-good learning rate (the smoke sweep's good one, and the demo's
    # hand-written initial point before search_space: auto) is 3e-3
    from .conftest import SMOKE_LR

    known_good = SMOKE_LR["good"]
    assert centre / 2 < known_good < centre * 2 and 2.5e-3 < centre < 3.5e-3
    lr = plan.domains["training.learning_rate"]
    assert (lr.kind, lr.low, lr.high) == ("loguniform", _round3(centre / 4), _round3(centre * 4))
    assert plan.domains["lora.target_modules"].values == ("all-linear", "mlp")
    assert plan.domains["lora.r"].values == (8, 16, 32)  # 32 <= 192 / 4
    assert plan.domains["lora.dropout"].values == (0.0, 0.05, 0.1)
    names = linear_module_names(cfg.model.model_dump())
    assert resolve_target("all-linear", names) == [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert resolve_target("mlp", names) == ["gate_proj", "up_proj", "down_proj"]
    # initial points: the centre, half, twice; all linear layers, the middle rank and dropout
    assert [p["training.learning_rate"] for p in cfg.search.initial_points] == [
        centre, _round3(centre / 2), _round3(centre * 2)]
    assert all(p["lora.target_modules"] == "all-linear" and p["lora.r"] == 16
               and p["lora.dropout"] == 0.05 for p in cfg.search.initial_points)
    assert "preset" not in cfg.search_space  # resolved: the entries themselves
    reason = plan.auto_space.reasons["training.learning_rate"]
    assert f"centre {sci(centre)} from 5e-5*10*(2000/{hidden})^0.781 (llama rule" in reason


@pytest.mark.fast
def test_auto_on_qwen2(tmp_path):
    from transformers import Qwen2Config

    path = _save(Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, vocab_size=100),
                 tmp_path, "qwen2")
    cfg, plan = _load(tmp_path, model={"name_or_path": path}, search_space="auto")
    centre = _round3(5e-4 * (2000 / 64) ** 0.0775)
    lr = plan.domains["training.learning_rate"]
    assert (lr.low, lr.high) == (_round3(centre / 4), _round3(centre * 4))
    assert "qwen rule, LoRA Without Regret" in plan.auto_space.reasons["training.learning_rate"]
    assert plan.domains["lora.r"].values == (8, 16)  # capped at 64 / 4
    names = linear_module_names({"name_or_path": path})
    assert resolve_target("mlp", names) == ["gate_proj", "up_proj", "down_proj"]
    assert len(resolve_target("all-linear", names)) == 7
    # search.num_trials is 2 here: two initial points
    assert [p["training.learning_rate"] for p in cfg.search.initial_points] == [
        centre, _round3(centre / 2)]


@pytest.mark.fast
@pytest.mark.parametrize("arch", ["gpt_neox", "phi"])
def test_auto_on_architectures_without_a_calibrated_rule(tmp_path, arch):
    from transformers import GPTNeoXConfig, PhiConfig

    make = {"gpt_neox": GPTNeoXConfig, "phi": PhiConfig}[arch]
    path = _save(make(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, vocab_size=100), tmp_path, arch)
    cfg, plan = _load(tmp_path, model={"name_or_path": path}, search_space="auto")
    centre = _round3(5e-4 * (2000 / 256) ** 0.781)  # the Llama exponent as the fallback
    assert plan.domains["training.learning_rate"].high == _round3(centre * 4)
    assert (f"no calibrated rule for {arch}: the llama exponent as fallback"
            in plan.auto_space.reasons["training.learning_rate"])
    assert plan.domains["lora.r"].values == (8, 16, 32)
    names = linear_module_names({"name_or_path": path})
    mlp = {"gpt_neox": ["dense_h_to_4h", "dense_4h_to_h"], "phi": ["fc1", "fc2"]}[arch]
    assert resolve_target("mlp", names) == mlp
    assert set(mlp) < set(resolve_target("all-linear", names))
    assert "embed_out" not in resolve_target("all-linear", names)


# --------------------------------------------------------- overrides and errors (fast)

@pytest.mark.fast
def test_explicit_entries_override_auto_and_move_its_points(tmp_path):
    cfg, plan = _load(tmp_path, training=LONG, search={"num_trials": 12}, search_space={
        "preset": "auto", "lora.r": {"choice": [4]},
        "training.warmup_ratio": {"choice": [0.0, 0.1]}})
    assert plan.domains["lora.r"].values == (4,)
    assert plan.domains["training.warmup_ratio"].values == (0.0, 0.1)
    assert plan.domains["training.learning_rate"].kind == "loguniform"  # auto's, kept
    assert len(cfg.search.initial_points) == 3
    assert all(p["lora.r"] == 4 and p["training.warmup_ratio"] == 0.0
               for p in cfg.search.initial_points)
    assert plan.auto_space.reasons["lora.r"] == "yours (auto's: choice of 8, 16, 32)"
    assert plan.auto_space.yours == ("lora.r", "training.warmup_ratio")

    # the learning rate overridden: auto's three points fall into its range as one point
    cfg, _ = _load(tmp_path, training=LONG, search={"num_trials": 12}, search_space={
        "preset": "auto", "training.learning_rate": {"loguniform": [1.0e-5, 1.0e-4]}})
    assert [p["training.learning_rate"] for p in cfg.search.initial_points] == [1.0e-4]

    # the config's own initial points are kept, auto's not added
    mine = [{"training.learning_rate": 1e-3, "lora.target_modules": "mlp", "lora.r": 8,
             "lora.dropout": 0.0}]
    cfg, _ = _load(tmp_path, training=LONG, search_space="auto",
                   search={"num_trials": 4, "initial_points": mine})
    assert cfg.search.initial_points == mine

    # a fixed alpha: auto searches no alpha ratio (which a fixed alpha would override)
    cfg, plan = _load(tmp_path, search_space="auto", lora={"alpha": 16})
    assert "lora.alpha_ratio" not in plan.domains and "lora.alpha" in plan.auto_space.fixed


@pytest.mark.fast
def test_typos_and_mistakes_beside_auto_are_still_errors(tmp_path):
    problems = _problems(tmp_path, search_space={"preset": "auto", "lora.rr": {"choice": [8]}})
    assert any("search_space.lora.rr" in p and "Did you mean 'lora.r'?" in p for p in problems)
    problems = _problems(tmp_path, search_space="atuo")
    assert any("no preset named 'atuo'" in p and "Did you mean 'auto'?" in p for p in problems)
    # with the rest of the config broken, the space's own entries are still checked, and
    # auto (which needs a valid config to read the model) is not blamed
    problems = _problems(tmp_path, training={"max_steps": "abc"},
                         search_space={"preset": "auto", "lora.r": {"choice": []}})
    assert any(p.startswith("sweep.yaml line") and "training.max_steps" in p for p in problems)
    assert any("search_space.lora.r: 'choice' needs a non-empty list" in p for p in problems)
    assert not any("preset" in p for p in problems), problems
    # a searched initial point outside auto's space names the setting
    problems = _problems(tmp_path, search_space="auto", search={"initial_points": [
        {"training.learning_rate": 1.0, "lora.target_modules": "mlp", "lora.r": 8,
         "lora.dropout": 0.0}]})
    assert any("search.initial_points[0].training.learning_rate = 1.0: outside loguniform" in p
               for p in problems), problems


@pytest.mark.fast
def test_a_model_auto_cannot_read_is_one_problem_naming_it(tmp_path):
    empty = tmp_path / "no-model"
    empty.mkdir()
    problems = _problems(tmp_path, model={"name_or_path": str(empty)}, search_space="auto")
    assert len(problems) == 1, problems
    assert problems[0].startswith("sweep.yaml line") and "model.name_or_path" in problems[0]
    assert "search_space: auto builds the space from the model's config" in problems[0]
    assert "Fix:" in problems[0]


# ------------------------------------------------- the real CLI and a real sweep (slow)

def test_validate_prints_the_space_auto_chose_and_why(tmp_path, tiny_model_dir):
    path = write_config(tmp_path / "sweep.yaml", search_space="auto", training=LONG,
                        search={"num_trials": 12})
    proc = cli("validate", str(path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "search space: auto, built from llama, hidden_size 192, 4 layers; 1600 training " \
           "rows, 1920 examples per trial (1.2 epochs)" in out
    assert ("training.learning_rate: loguniform 0.00078 .. 0.0125 — centre 3.12e-3 from "
            "5e-5*10*(2000/192)^0.781 (llama rule, LoRA Without Regret)") in out
    assert "lora.target_modules: choice of all-linear, mlp — all linear layers first" in out
    assert "lora.r: choice of 8, 16, 32 — the ladder 8, 16, 32 up to hidden_size/4 = 48" in out
    assert "lora.dropout: choice of 0.0, 0.05, 0.1 — " in out
    assert "lora.alpha_ratio: fixed at 2 (alpha = 2 x r" in out
    assert ("initial points (3, from the prior): lr 0.00312, targets all-linear, r 16, "
            "dropout 0.05; lr 0.00156, ") in out


def test_a_sweep_records_the_space_auto_built(tmp_path, tiny_model_dir):
    """A tiny real sweep (2 trials, 10 steps): sweep.yaml holds auto's entries and points, the
    trials ran the points, and the recorded config loads back to the same space."""
    path = write_config(
        tmp_path / "sweep.yaml", search_space="auto", data={"max_eval_samples": 8},
        training={"max_steps": 10, "eval_steps": 5, "logging_steps": 5},
        search={"algorithm": "optuna", "num_trials": 2, "max_concurrent": 2},
        scheduler={"type": "none"}, storage={"path": str(tmp_path / "sweeps"), "name": "auto"})
    cfg, plan = load_config(path)
    proc = cli("run", str(path), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sweep = tmp_path / "sweeps" / "auto"
    recorded = yaml.safe_load((sweep / "sweep.yaml").read_text())
    assert recorded["search_space"] == cfg.search_space and "preset" not in cfg.search_space
    assert recorded["search"]["initial_points"] == cfg.search.initial_points
    ran = sorted((json.loads(p.read_text()) for p in sweep.glob("*/params.json")),
                 key=lambda p: -p["training.learning_rate"])
    assert ran == sorted(cfg.search.initial_points, key=lambda p: -p["training.learning_rate"])
    again, replan = load_config(sweep / "sweep.yaml", existing=True)
    assert replan.auto_space is None  # what ran, read back; nothing built again
    assert {k: d.describe() for k, d in replan.domains.items()} == {
        k: d.describe() for k, d in plan.domains.items()}
    assert math.isclose(again.search.initial_points[0]["training.learning_rate"],
                        cfg.search.initial_points[0]["training.learning_rate"])
