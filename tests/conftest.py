from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The builtin tiny Llama, built once (cached across runs by its recipe hash)."""
    from trainables import tiny_llama

    return tiny_llama.ensure_built()


def write_config(path: Path, **sections) -> Path:
    """A sweep config on the demo data, with small settings, updated by ``sections``."""
    cfg = {
        "model": {"name_or_path": "builtin:tiny-llama"},
        "data": {"train": str(EXAMPLES / "data/pricing_train.jsonl"),
                 "eval": str(EXAMPLES / "data/pricing_eval.jsonl"), "max_length": 64},
        "training": {"max_steps": 20, "eval_steps": 10, "logging_steps": 5},
        "search_space": {"lora.r": {"choice": [4, 8]}},
        "search": {"num_trials": 2},
        "storage": {"path": str(path.parent / "sweeps")},
    }
    for key, value in sections.items():
        if key != "search_space" and isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def cli(*args: str, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m orchestrator ...`` as a user would, capturing its output.

    ``env`` is added to this process's environment; a None value removes that variable.
    """
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def run_small_sweep(root: Path, name: str, *, learning_rate: float, env: dict | None = None,
                    **sections) -> Path:
    """A real one-trial sweep via the CLI; returns its sweep dir."""
    config = write_config(
        root / f"{name}.yaml",
        data={"max_eval_samples": 40},
        training={"max_steps": 30, "eval_steps": 10},
        search_space={"training.learning_rate": {"choice": [learning_rate]}},
        search={"algorithm": "random", "num_trials": 1},
        scheduler={"type": "none"},
        storage={"path": str(root / "sweeps"), "name": name},
        **sections,
    )
    proc = cli("run", str(config), timeout=900, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    (root / f"{name}.log").write_text(proc.stdout + proc.stderr)
    return root / "sweeps" / name
