"""The promotion bundle: the winning adapter, its tokenizer, its model card and its evidence.

``SWEEP_DIR/promoted/`` holds exactly what goes to the Hub in one commit::

    adapter_model.safetensors  adapter_config.json   the adapter (PeftModel.from_pretrained)
    tokenizer files                                  as saved with the checkpoint
    README.md                                        the model card
    sweep_summary.json                               search space, every trial, seeds, data
                                                     hashes, base model, library versions
    training_curve.png                               eval loss of the winner vs the others

It is written to a temporary folder and renamed into place, so it is never half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from trainables.items import ITEMS_FILE
from trainables.spec import TrialSpec

from ..sweepdir.folder import SweepDir
from ..sweepdir.names import PROMOTED
from ..sweepdir.results import strict_dumps
from ..config.plan import SweepPlan

# Training state (and the evaluation's per-item values) in a checkpoint that does not belong
# in a published adapter.
TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json",
                  "training_args.bin", "README.md", ITEMS_FILE)


def _publishable(name: str) -> bool:
    return name not in TRAINING_STATE and not name.startswith("rng_state")


def summary(sweep: SweepDir, spec: TrialSpec, derived: SweepPlan,
            adapter_sha256: str) -> dict[str, Any]:
    """Everything a reader needs to trust (or repeat) the result; no paths of this machine."""
    from .provenance import base_model_identity, data_identity, library_versions, project_commit

    best = sweep.require_best()
    cfg = sweep.config
    data = spec.data
    checkpoint = sweep.best_checkpoint()
    at_best = next((h for h in sweep.history(best["trial_id"]) if h["step"] == best["step"]), {})
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sweep": {
            "name": sweep.name,
            "metric": sweep.metric,
            "mode": sweep.mode,
            "algorithm": cfg["search"]["algorithm"],
            "scheduler": cfg["scheduler"],
            "num_trials": len(sweep.leaderboard()),
            "search_seed": cfg["search"]["seed"],
            "search_space": {k: d.describe() for k, d in derived.domains.items()},
            "scorers": (cfg.get("evaluation") or {}).get("scorers") or [],
        },
        "winner": {
            "trial_id": best["trial_id"],
            "checkpoint": f"{checkpoint.parent.name}/{checkpoint.name}",
            "step": best["step"],
            "value": best["value"],
            "eval": {k: at_best.get(k) for k in ("eval_loss", "eval_perplexity",
                                                 "eval_mean_token_accuracy")},
            "searched": best["config"],
            "adapter_sha256": adapter_sha256,
            "task": best.get("task_metrics") or {},
            "verdict": best.get("verdict"),
            "winner_rule": best.get("winner_rule"),
            "runner_up": best.get("runner_up"),
        },
        "baseline": sweep.baseline,
        "trials": sweep.leaderboard(),
        "training": cfg["training"],
        "lora": cfg["lora"],
        "base_model": base_model_identity(spec.model),
        "data": {
            "format": spec.data_format,
            "prompt_suffix": spec.prompt_format["prompt_suffix"],
            "max_length": data["max_length"],
            "train": data_identity(data["train"]),
            "eval": data_identity(data["eval"]) if data["eval"] else
            {"held_out_fraction_of_train": data["eval_fraction"]},
            "max_eval_samples": data["max_eval_samples"],
        },
        "libraries": library_versions(),
        "project": project_commit(),
    }


def build_bundle(sweep: SweepDir, spec: TrialSpec, derived: SweepPlan, *,
                 repo_id: str | None = None) -> Path:
    """Write ``SWEEP_DIR/promoted`` from the best trial's best checkpoint; returns its path."""
    from .model_card import render_card
    from ..observe.plots import training_curve
    from .provenance import file_sha256

    checkpoint = sweep.best_checkpoint()
    dest = sweep.path / PROMOTED
    tmp = Path(tempfile.mkdtemp(prefix=".promoted-", dir=sweep.path))
    # mkdtemp makes it private (0700); the bundle is output like any other of the sweep dir
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    try:
        for item in sorted(checkpoint.iterdir()):
            if item.is_file() and _publishable(item.name):
                shutil.copy2(item, tmp / item.name)
        facts = summary(sweep, spec, derived, file_sha256(tmp / "adapter_model.safetensors"))
        adapter_config = json.loads((tmp / "adapter_config.json").read_text())
        facts["winner"]["target_modules"] = sorted(adapter_config.get("target_modules") or [])
        # The checkpoint names the base model by this machine's cache path; name it as the
        # user did, so AutoPeftModel and readers of the card see the real base model.
        adapter_config["base_model_name_or_path"] = facts["base_model"]["name_or_path"]
        adapter_config["revision"] = spec.model.get("revision")
        (tmp / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")
        (tmp / "sweep_summary.json").write_text(strict_dumps(facts, indent=2) + "\n")
        has_curve = training_curve(sweep, tmp / "training_curve.png")
        (tmp / "README.md").write_text(render_card(facts, repo_id=repo_id, curve=has_curve))
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=".promoted-old-", dir=sweep.path))
            os.replace(dest, old / PROMOTED)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
