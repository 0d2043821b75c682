"""The import rules of the layout (docs/contributing.md), checked over the import graph of the
source: the worker package never imports the driver's, search spaces import neither, no module
imports another that imports it back (at any depth), and reading a sweep dir never loads Ray
or torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.fast

PACKAGES = ("orchestrator", "trainables", "search_spaces")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(name: str, path: Path, *, top_only: bool) -> set[str]:
    """The project modules ``name`` imports (at module level only, with ``top_only``)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = ".".join(base[:len(base) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}
    return {m for m in found if m.split(".")[0] in PACKAGES}


def test_trainables_and_search_spaces_never_import_the_driver():
    wrong = []
    for name, path in _modules().items():
        root = name.split(".")[0]
        allowed = {"trainables": {"trainables", "search_spaces"},
                   "search_spaces": {"search_spaces"}}.get(root)
        if allowed is None:
            continue
        wrong += [f"{name} imports {m}" for m in _imports(name, path, top_only=False)
                  if m.split(".")[0] not in allowed]
    assert not wrong, wrong


# orchestrator's sub-packages, lowest first: each imports only from its own layer or lower ones.
LAYERS = ["errors", "config", "sweepdir", "observe", "callbacks", "promotion", "run",
          "serving", "cli", "reference", "__main__"]


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else len(LAYERS)


def test_orchestrator_layers_import_downwards_only():
    wrong = []
    for name, path in _modules().items():
        if not name.startswith("orchestrator."):
            continue
        wrong += [f"{name} (layer {_layer(name)}) imports {m} (layer {_layer(m)})"
                  for m in _imports(name, path, top_only=False)
                  if m.startswith("orchestrator.") and m in _modules() and _layer(m) > _layer(name)]
    assert not wrong, wrong


def test_observing_never_imports_ray():
    heavy = []
    for name, path in _modules().items():
        if name.startswith(("orchestrator.observe", "orchestrator.sweepdir")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                heavy += [f"{name} imports {n}" for n in names if n.split(".")[0] == "ray"]
    assert not heavy, heavy


def test_no_import_cycle_even_through_imports_inside_functions():
    """A function-level import does not hide a cycle: the graph has every import."""
    modules = _modules()
    graph = {name: {m for m in _imports(name, path, top_only=False) if m in modules and m != name}
             for name, path in modules.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


def test_reading_a_sweep_dir_loads_neither_ray_nor_torch():
    readers = ["orchestrator.observe.status", "orchestrator.observe.report",
               "orchestrator.observe.dashboard", "orchestrator.observe.verdict",
               "orchestrator.sweepdir.folder", "orchestrator.sweepdir.results", "orchestrator.cli"]
    code = ("import sys\n"
            f"import {', '.join(readers)}\n"
            "heavy = [m for m in ('ray', 'torch', 'transformers') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_the_driver_names_the_worker_code_without_importing_it():
    """``run`` and ``resume`` hand Ray the trainable and the one-off tasks through
    ``trainables.entry``, which imports torch, PEFT, bitsandbytes and TRL only on the worker;
    promotion, which evaluates adapters in its own process, is the one driver module that
    imports ``trainables.trial``."""
    wrong = [f"{name} imports {m}" for name, path in _modules().items()
             if name.startswith("orchestrator.") and name != "orchestrator.promotion.promote"
             for m in _imports(name, path, top_only=False)
             if m == "trainables.trial" or m.startswith("trainables.trial.")]
    assert not wrong, wrong
    code = ("import sys\n"
            "import trainables.entry, orchestrator.run.sweep, orchestrator.run.resume\n"
            "heavy = [m for m in ('trainables.trial', 'peft', 'bitsandbytes', 'trl')\n"
            "         if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_only_the_command_line_prints():
    """Modules log (``logging.getLogger(__name__)``); the CLI decides where it goes."""
    allowed = {"orchestrator.cli", "orchestrator.reference"}  # reference: its __main__ script
    printing = []
    for name, path in _modules().items():
        if name in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "print"):
                printing.append(f"{name}:{node.lineno}")
    assert not printing, printing


def test_sweep_dir_file_names_live_in_one_module():
    from orchestrator.sweepdir import names

    files = {v for k, v in vars(names).items() if k.isupper() and "." in v}
    written = []
    for name, path in _modules().items():
        if not name.startswith("orchestrator.") or name == "orchestrator.sweepdir.names":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in files:
                written.append(f"{name}:{node.lineno} {node.value!r}")
    assert not written, written
