"""Disk used by a finished sweep's checkpoints, against the same sweep keeping every checkpoint.

    python benchmarks/checkpoint_disk.py SWEEP_DIR        (e.g. the sweep dir `make demo` made)

Every evaluation of a trial reports a checkpoint (``progress.csv`` names it in
``checkpoint_dir_name``); a sweep that kept them all would hold one checkpoint per report.
Within a trial every checkpoint holds the same tensors (adapter, optimizer and scheduler state
for the same rank and modules), so "keeping everything" is, per trial, the number of its
reported checkpoints times the size of one it kept. That is computed here from the sweep's
own files, next to what is actually on disk.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import record, table  # noqa: E402
from trainables.storage import tree_bytes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args()
    sweep = args.sweep_dir.resolve()
    kept_total = everything = reported = kept_count = 0
    adapter_only = True
    for trial_dir in sorted(sweep.glob("trial_*")):
        with open(trial_dir / "progress.csv", newline="") as f:
            names = [r["checkpoint_dir_name"] for r in csv.DictReader(f)
                     if r.get("checkpoint_dir_name")]
        kept = sorted(trial_dir.glob("checkpoint_*"))
        if not kept:
            continue
        sizes = [tree_bytes(k) for k in kept]
        kept_total += sum(sizes)
        kept_count += len(kept)
        reported += len(set(names))
        everything += len(set(names)) * max(sizes)
        adapter_only &= all(not (k / "model.safetensors").exists() for k in kept)
    body = table(["checkpoints", "count", "bytes", "vs keeping everything"], [
        ["kept on disk (storage.keep_checkpoints, ASHA-stopped: best only)", kept_count,
         f"{kept_total:,}", f"{kept_total / everything:.2f}"],
        ["every reported checkpoint kept", reported, f"{everything:,}", "1"],
    ])
    body += (f"\n\nAll kept checkpoints adapter-only (no base weights): {adapter_only}. Sweep "
             f"dir in all: {tree_bytes(sweep):,} bytes.")
    record(f"Checkpoint disk use ({sweep.name})", body)


if __name__ == "__main__":
    main()
