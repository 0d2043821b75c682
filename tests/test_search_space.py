"""Search-space conversion to Ray Tune domains, alpha_ratio, and target groups per architecture."""

from __future__ import annotations

import pytest
from ray.tune.search.sample import Categorical, Float, Integer

from search_spaces import load_preset, merge_space, parse_space
from search_spaces.domains import SpaceError, grid_size, to_tune
from search_spaces.targets import TargetError, resolve_groups, resolve_target
from trainables.model import linear_module_names
from trainables.spec import TrialSpec

pytestmark = pytest.mark.fast


def test_every_rule_becomes_its_tune_domain():
    space = parse_space({
        "lora.r": {"choice": [8, 16]},
        "lora.dropout": {"uniform": [0.0, 0.1]},
        "training.learning_rate": {"loguniform": [1e-5, 1e-3]},
        "training.warmup_ratio": {"quniform": [0.0, 0.1, 0.05]},
        "training.per_device_train_batch_size": {"int": [2, 8]},
        "training.gradient_accumulation_steps": {"qrandint": [1, 8, 1]},
        "lora.target_modules": [["q_proj", "v_proj"], "all-linear"],
    })
    tuned = {k: to_tune(d) for k, d in space.items()}
    assert isinstance(tuned["lora.r"], Categorical) and tuned["lora.r"].categories == [8, 16]
    assert isinstance(tuned["training.learning_rate"], Float)
    lr = tuned["training.learning_rate"]
    assert (lr.lower, lr.upper) == (1e-5, 1e-3) and "LogUniform" in type(lr.get_sampler()).__name__
    bs = tuned["training.per_device_train_batch_size"]
    assert isinstance(bs, Integer) and (bs.lower, bs.upper) == (2, 9)  # both ends included
    assert set(bs.sample(size=200)) == {2, 3, 4, 5, 6, 7, 8}
    # Optuna sees group names and "a+b" strings, never Python lists.
    assert tuned["lora.target_modules"].categories == ["q_proj+v_proj", "all-linear"]


def test_grid_uses_grid_search_over_choices():
    space = parse_space({"lora.r": [4, 8], "lora.dropout": [0.0, 0.1, 0.2]})
    assert grid_size(space) == 6
    assert to_tune(space["lora.r"], grid=True) == {"grid_search": [4, 8]}


def test_preset_with_inline_override():
    entries = merge_space({"preset": "qlora-paper", "lora.r": {"choice": [8]}})
    assert entries["lora.r"] == {"choice": [8]}
    assert entries["training.learning_rate"] == load_preset("qlora-paper")["training.learning_rate"]


def test_bad_entries_are_all_reported():
    with pytest.raises(SpaceError) as err:
        parse_space({"lora.r": {"choice": []}, "lora.dropout": {"uniform": [0.2, 0.1]}})
    assert len(err.value.problems) == 2


def _base(alpha=None) -> TrialSpec:
    return TrialSpec(
        model={}, data={},
        lora={"r": 8, "alpha": alpha, "alpha_ratio": 2.0, "target_modules": "attention"},
        training={"learning_rate": 1e-3},
        target_groups={"attention": ["q_proj", "v_proj"], "q_proj+o_proj": ["q_proj", "o_proj"]})


def test_alpha_ratio_times_r_gives_alpha():
    base = _base()
    s = base.for_trial({"lora.r": 16, "lora.alpha_ratio": 0.5})
    assert s.lora["alpha"] == 8.0 and s.lora["r"] == 16
    assert base.lora == {"r": 8, "alpha": None, "alpha_ratio": 2.0,
                         "target_modules": "attention"}  # the sweep's spec is unchanged
    s = base.for_trial({"lora.r": 32})
    assert s.lora["alpha"] == 64.0  # fixed ratio 2.0
    assert _base(alpha=16).for_trial({"lora.r": 64}).lora["alpha"] == 16


def test_group_names_resolve_to_the_model_modules():
    s = _base().for_trial({"lora.target_modules": "q_proj+o_proj"})
    assert s.lora["resolved_target_modules"] == ["q_proj", "o_proj"]
    assert _base().for_trial({}).lora["resolved_target_modules"] == ["q_proj", "v_proj"]


def _save(config, tmp_path, name):
    path = tmp_path / name
    config.save_pretrained(path)
    return linear_module_names({"name_or_path": str(path)})


def test_groups_on_llama(tmp_path):
    from transformers import LlamaConfig

    names = _save(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, vocab_size=100), tmp_path, "llama")
    groups = resolve_groups(names)
    assert groups["attention"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert groups["mlp"] == ["gate_proj", "up_proj", "down_proj"]
    assert "lm_head" not in groups["all-linear"] and len(groups["all-linear"]) == 7


def test_groups_on_gpt2_split_the_shared_c_proj(tmp_path):
    from transformers import GPT2Config

    names = _save(GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100), tmp_path, "gpt2")
    groups = resolve_groups(names)
    assert groups["attention"] == ["c_attn", "attn.c_proj"]
    assert groups["mlp"] == ["c_fc", "mlp.c_proj"]


def test_groups_on_gpt_neox(tmp_path):
    from transformers import GPTNeoXConfig

    names = _save(GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, vocab_size=100), tmp_path, "neox")
    groups = resolve_groups(names)
    assert groups["attention"] == ["query_key_value", "dense"]
    assert groups["mlp"] == ["dense_h_to_4h", "dense_4h_to_h"]
    assert "embed_out" not in groups["all-linear"]


def test_groups_on_phi(tmp_path):
    from transformers import PhiConfig

    names = _save(PhiConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, vocab_size=100), tmp_path, "phi")
    groups = resolve_groups(names)
    assert {"q_proj", "k_proj", "v_proj"} <= set(groups["attention"])
    assert groups["mlp"] == ["fc1", "fc2"]


def test_a_list_that_matches_nothing_lists_the_modules(tmp_path):
    from transformers import LlamaConfig

    names = _save(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                              num_attention_heads=4, vocab_size=100), tmp_path, "llama")
    with pytest.raises(TargetError) as err:
        resolve_target(["c_attn"], names)
    assert "c_attn" in str(err.value) and "q_proj" in str(err.value)
    assert resolve_target("q_proj+v_proj", names) == ["q_proj", "v_proj"]
