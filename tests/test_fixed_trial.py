"""One fixed training (an empty search space, one trial) runs with the default Optuna search,
and the commands a user runs after it answer without a traceback, a mismatched
``generate --base-model`` included."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.cli import main

from .conftest import write_config


def _command(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "Traceback" not in out, out[-3000:]
    return code, out


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


def test_a_fixed_single_trial_runs_and_its_adapter_is_refused_on_another_model(
        capsys, tmp_path, tiny_model_dir):
    config = write_config(tmp_path / "fixed.yaml", search_space={},
                          search={"num_trials": 1, "algorithm": "optuna"},
                          training={"max_steps": 4, "eval_steps": 2, "logging_steps": 2},
                          scheduler={"type": "none"},
                          resources={"cpu": 1, "gpu": 0})
    # OptunaSearch refused an empty space: a 60-line RuntimeError, the sweep left interrupted.
    code, out = _command(capsys, "run", str(config), "storage.name=fixed")
    assert code == 0, out[-3000:]
    sweep = tmp_path / "sweeps" / "fixed"
    best = json.loads((sweep / "best.json").read_text())
    assert best["checkpoint_path"] and Path(best["checkpoint_path"]).is_dir()
    assert json.loads((sweep / "status.json").read_text())["state"] == "finished"

    code, out = _command(capsys, "status", str(sweep))
    assert code == 0 and "1 completed" in out, out
    code, out = _command(capsys, "resume", str(sweep))
    assert code != 0 and "finished" in out, out

    # Its adapter on a model of another shape: one message, not an 84-line size mismatch.
    other = _other_llama(tmp_path / "other-llama", tiny_model_dir)
    code, out = _command(capsys, "generate", best["checkpoint_path"], "A steel desk?",
                         "--base-model", str(other), "--max-new-tokens", "4")
    assert code != 0, out
    assert f"--base-model {other}: the adapter does not fit this model" in out, out
    assert "the adapter has shape" in out and "it was trained on builtin:tiny-llama" in out, out
    assert "Fix:" in out
