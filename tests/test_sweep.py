"""A real sweep on local Ray: Optuna + ASHA, the whole sweep-dir contract, a NaN trial."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from .conftest import cli, write_config


def test_real_sweep_writes_the_contract(tiny_model_dir, tmp_path):
    good, also_good, bad, nan = 3e-3, 2e-3, 1e-6, 1e8
    config = write_config(
        tmp_path / "sweep.yaml",
        data={"max_eval_samples": 40},
        training={"max_steps": 30, "eval_steps": 10, "max_grad_norm": 0.0},
        search_space={"training.learning_rate": {"choice": [good, also_good, bad, nan]},
                      "lora.target_modules": {"choice": ["attention", "all-linear"]}},
        # Two good trials run first, so ASHA has a rung to compare the poor one against;
        # the last one diverges (NaN) and must not break the sweep.
        search={"algorithm": "optuna", "num_trials": 5, "max_concurrent": 2, "seed": 1,
                "initial_points": [
                    {"training.learning_rate": good, "lora.target_modules": "all-linear"},
                    {"training.learning_rate": also_good, "lora.target_modules": "attention"},
                    {"training.learning_rate": bad, "lora.target_modules": "attention"},
                    {"training.learning_rate": nan, "lora.target_modules": "attention"},
                ]},
        scheduler={"type": "asha", "grace_period": 10, "reduction_factor": 2},
        storage={"path": str(tmp_path / "sweeps"), "name": "smoke", "keep_checkpoints": 2},
    )
    proc = cli("run", str(config), timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    sweep = tmp_path / "sweeps" / "smoke"

    # The sweep-dir contract.
    for name in ("sweep.yaml", "baseline.json", "leaderboard.csv", "best.json", "optuna.journal"):
        assert (sweep / name).is_file(), name
    resolved = yaml.safe_load((sweep / "sweep.yaml").read_text())
    assert resolved["storage"]["name"] == "smoke"
    assert Path(resolved["data"]["train"]["path"]).is_absolute()

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
    assert any(r["status"] == "completed" for r in rows)

    baseline = json.loads((sweep / "baseline.json").read_text())
    best = json.loads((sweep / "best.json").read_text())
    assert set(best) == {"trial_id", "config", "metric", "mode", "value", "step",
                         "checkpoint_path", "baseline_value"}
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

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), ckpt)
    assert model.peft_config["default"].target_modules

    # The printed leaderboard shows the baseline row and the best adapter's path.
    assert "base model" in out and f"best adapter: {ckpt}" in out and "wall time" in out
