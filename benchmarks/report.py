"""Shared by the benchmark scripts: describe the machine, format a table, append to BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "no GPU"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            gpu = ", ".join(out.stdout.strip().splitlines())
    except (OSError, subprocess.SubprocessError):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {gpu}, Python {platform.python_version()}"


def spread(values: list[float]) -> str:
    """``median (min-max)`` of repeated measurements."""
    return f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def append(title: str, body: str) -> None:
    """Print the result and append it to BENCHMARKS.md with the command, date and machine."""
    command = " ".join([Path(sys.executable).name, *sys.argv])
    section = (f"\n## {title}\n\n`{command}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
               f", {machine()}\n\n{body}\n")
    print(section)
    if not BENCHMARKS.exists():
        BENCHMARKS.write_text("# Benchmarks\n\nEach section is appended by the script named in "
                              "it; figures are ratios of two things measured in the same run.\n")
    with open(BENCHMARKS, "a") as f:
        f.write(section)
