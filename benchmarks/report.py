"""Shared by the benchmark scripts: describe the machine, format a table, record the result in
docs/benchmarks.md (one current section per figure)."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "docs" / "benchmarks.md"


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


def _key(title: str) -> str:
    """What a section is about: its title without the parenthesised run it came from."""
    return title.split(" (", 1)[0].strip()


def sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``(preamble, [(title, section text), ...])`` of a benchmarks page."""
    parts = re.split(r"(?m)^(?=## )", text)
    return parts[0], [(part.splitlines()[0][3:], part) for part in parts[1:]]


def merge(text: str, title: str, section: str) -> str:
    """``text`` with ``section`` in place of the one about the same figure (or appended), and
    any older duplicate of it removed: one current table per figure."""
    preamble, old = sections(text)
    out, placed = [], False
    for name, part in old:
        if _key(name) == _key(title):
            if not placed:
                out.append(section)
                placed = True
            continue
        out.append(part)
    if not placed:
        out.append(section)
    return preamble + "".join(p if p.endswith("\n\n") else p.rstrip("\n") + "\n\n" for p in out)


def record(title: str, body: str) -> None:
    """Print the result and write it to docs/benchmarks.md with the command, date and machine,
    replacing the earlier result of the same figure."""
    command = " ".join([Path(sys.executable).name, *sys.argv])
    section = (f"## {title}\n\n`{command}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
               f", {machine()}\n\n{body}\n")
    print(section)
    text = (BENCHMARKS.read_text() if BENCHMARKS.exists() else
            "# Benchmarks\n\nOne section per figure, written by the script named in it (the "
            "newest run replaces the older one); figures are ratios of two things measured in the "
            "same run.\n\n")
    BENCHMARKS.write_text(merge(text, title, section).rstrip("\n") + "\n")
