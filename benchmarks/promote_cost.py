"""What promotion costs on a finished sweep: bundle size vs the base model, and promote's time.

    python benchmarks/promote_cost.py SWEEP_DIR [--repeats 3]

Works on a copy of SWEEP_DIR (the original is not touched) and pushes to the Hub-compatible
test server of tests/hub_server.py on 127.0.0.1, so no network or token is needed. Each
repetition times, as a user runs them (a fresh ``qlora-sweep`` process each):

* ``promote SWEEP_DIR``: the bundle only;
* ``promote --repo-id`` to an empty repo: bundle + create repo + one commit + tag;
* ``promote --repo-id`` to a repo holding another adapter of the same base (the sweep's
  runner-up): bundle + both evaluated on the eval set + commit + tag.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import record, spread, table  # noqa: E402
from tests.hub_server import HubServer  # noqa: E402

TOKEN = "hf_benchmark_write"


def _promote(sweep: Path, *args: str, env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "promote", str(sweep), *args],
                          capture_output=True, text=True, env=env, timeout=1800)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"promote failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _plant_champion(hub: HubServer, repo: str, sweep: Path) -> None:
    """Put the runner-up's adapter in ``repo`` as the adapter to beat."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from orchestrator.sweepdir.folder import open_sweep

    s = open_sweep(sweep)
    best = s.require_best()["trial_id"]
    runner_up = next(r for r in s.leaderboard() if r["trial_id"] != best and r["status"] != "errored")
    trial_dir = s.path / f"trial_{runner_up['trial_id']}"
    checkpoint = sorted(trial_dir.glob("checkpoint_*"))[-1]
    summary = json.loads((s.path / "promoted" / "sweep_summary.json").read_text())
    summary["winner"]["adapter_sha256"] = "runner-up"
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo(repo)
    api.create_commit(repo, commit_message="the champion", operations=[
        CommitOperationAdd("adapter_config.json", str(checkpoint / "adapter_config.json")),
        CommitOperationAdd("adapter_model.safetensors",
                           str(checkpoint / "adapter_model.safetensors")),
        CommitOperationAdd("sweep_summary.json", json.dumps(summary).encode())])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times = {"bundle": [], "empty": [], "champion": []}
    with tempfile.TemporaryDirectory() as tmp, \
            HubServer(tokens={TOKEN: "write"}, user="bench") as hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HOME=str(Path(tmp) / "hf"),
                   HF_HUB_DISABLE_TELEMETRY="1")
        for i in range(args.repeats):
            sweep = Path(tmp) / f"sweep{i}"
            shutil.copytree(args.sweep_dir, sweep, ignore=shutil.ignore_patterns(
                "promoted", "promotions.jsonl"))
            times["bundle"].append(_promote(sweep, env=env))
            times["empty"].append(_promote(sweep, "--repo-id", f"bench/empty-{i}", env=env))
            _plant_champion(hub, f"bench/champion-{i}", sweep)
            times["champion"].append(_promote(sweep, "--repo-id", f"bench/champion-{i}", env=env))
        bundle = sweep / "promoted"  # measured before the temporary folder goes
        summary = json.loads((bundle / "sweep_summary.json").read_text())
        bundle_size = _size(bundle)
        adapter = (bundle / "adapter_model.safetensors").stat().st_size

    from trainables.model import model_path

    base = Path(model_path({"name_or_path": summary["base_model"]["name_or_path"]}))
    weights = sum(f.stat().st_size for f in base.glob("*.safetensors"))
    sizes = table(["what", "bytes", "vs base model weights"], [
        ["base model weights (`*.safetensors`)", f"{weights:,}", "1"],
        ["bundle (adapter, tokenizer, card, summary, curve)", f"{bundle_size:,}",
         f"{bundle_size / weights:.3f}"],
        ["adapter weights alone", f"{adapter:,}", f"{adapter / weights:.3f}"],
    ])
    timing = table(["promote", f"seconds, median (min-max) of {args.repeats}"], [
        ["bundle only (no repo)", spread(times["bundle"])],
        ["to an empty repo (create, commit, tag)", spread(times["empty"])],
        ["against a champion (2 evaluations, commit, tag)", spread(times["champion"])],
    ])
    record(f"Promotion cost ({args.sweep_dir.name}, base {summary['base_model']['name_or_path']})",
           f"{sizes}\n\n{timing}\n\nEach time is a fresh `qlora-sweep promote` process (Python "
           f"start, imports, data and model loading included), pushing to the test Hub server "
           f"on 127.0.0.1, so network transfer time is not included.")


if __name__ == "__main__":
    main()
