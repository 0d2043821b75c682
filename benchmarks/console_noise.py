"""Console lines the project did not write, during the demo's ``validate`` and a short ``run``.

    python benchmarks/console_noise.py                       # this checkout
    python benchmarks/console_noise.py --checkout /tmp/old   # another one (e.g. a git worktree
                                                             # of an older commit), side by side

The project writes through its loggers to stdout, one plain line each. Everything else is
counted as not ours: every stderr line (library warnings, Ray's banners, worker output that Ray
forwards) except the project's own ``error:`` messages, and stdout lines in the shape of Ray
Tune's status table. The run is the demo's config with fewer trials and steps, so it takes
minutes, not the demo's full time.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import ROOT, record, table  # noqa: E402

# Ray Tune's console table (the old output path) and the lines around it.
RAY_TABLE = re.compile(r"^(== Status ==|Current time:|Using FIFO|Using AsyncHyperBand|"
                       r"Logical resource usage:|Current best trial:|Number of trials:|"
                       r"Sweep dir: |Result logdir:|Bracket:|\+-|\| |\(pid=|\x1b\[36m)")


def foreign(stdout: str, stderr: str) -> list[str]:
    lines = [ln for ln in stdout.splitlines() if RAY_TABLE.match(ln)]
    lines += [ln for ln in stderr.splitlines()
              if ln.strip() and not ln.startswith(("error:", "  - "))]
    return lines


def measure(checkout: Path, steps: int, trials: int) -> dict[str, tuple[int, int, list[str]]]:
    """``{command: (lines in all, lines not ours, the first few of them)}``."""
    config = checkout / "examples" / "demo_cpu.yaml"
    out = {}
    with tempfile.TemporaryDirectory(prefix="noise-") as tmp:
        for name, args in (("validate", ["validate", str(config)]),
                           ("run", ["run", str(config), f"training.max_steps={steps}",
                                    f"scheduler.grace_period={steps // 2}",
                                    f"search.num_trials={trials}", f"storage.path={tmp}"])):
            proc = subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=checkout,
                                  capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed in {checkout}:\n{proc.stderr[-3000:]}")
            everything = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
            theirs = foreign(proc.stdout, proc.stderr)
            out[name] = (len(everything), len(theirs), theirs[:5])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, action="append",
                        help="a checkout to measure (repeatable); default: this one")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--trials", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for checkout in args.checkout or [ROOT]:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout,
                                capture_output=True, text=True).stdout.strip()
        for name, (total, theirs, sample) in measure(checkout.resolve(), args.steps,
                                                     args.trials).items():
            rows.append([commit, name, total, theirs])
            for line in sample:
                print(f"  {commit} {name} not ours: {line[:110]}")
    body = table(["commit", "command", "lines", "lines not written by the project"], rows)
    body += (f"\n\nThe demo config with {args.trials} trials of {args.steps} steps; not ours: "
             "stderr lines other than our error messages, and Ray Tune status-table lines.")
    record("Console lines not written by the project (demo validate and a short run)", body)


if __name__ == "__main__":
    main()
