"""The docs cannot go stale: the generated reference pages match the code, the site builds with
MkDocs in strict mode (a broken link or anchor fails), every page is in the navigation, the
README stays a landing page (at most 10 KB, every link resolves) and its own-sweep config
validates."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from orchestrator.config.loading import load_config
from orchestrator.reference import pages

from .conftest import EXAMPLES, ROOT

pytestmark = pytest.mark.fast

DOCS = ROOT / "docs"


@pytest.mark.parametrize("name", sorted(pages()))
def test_generated_reference_pages_are_current(name):
    assert (DOCS / name).read_text() == pages()[name], (
        f"docs/{name} is stale: regenerate it with `python -m orchestrator.reference`")


def test_every_config_mistake_is_caught_at_its_cause_with_a_fix():
    """The errors page's catalogue (each mistake given on the command line): refused, one
    problem per line, each blamed on the command line and ending in a fix."""
    from orchestrator.reference import CONFIG_MISTAKES, config_error

    for what, overrides in CONFIG_MISTAKES:
        problems = config_error(overrides).splitlines()[1:]
        assert problems, what
        for line in problems:
            assert line.startswith("  - command line (") or line.startswith("  - override "), line
            assert "Fix:" in line and " is: " not in line, line


def test_the_site_builds_strictly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "reference" / "config" / "index.html").is_file()


def _nav_pages(nav) -> set[str]:
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, dict):
        return set().union(*(_nav_pages(v) for v in nav.values()))
    return set().union(*(_nav_pages(v) for v in nav))


def test_every_page_is_in_the_navigation():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    pages_on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert _nav_pages(nav) == pages_on_disk


def test_the_readme_is_a_landing_page_whose_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 10_000, "README.md is over 10 KB: move the detail to docs/"
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    assert len(links) >= 10
    missing = [link for link in links if "://" not in link and not (ROOT / link).exists()]
    assert not missing, missing


def test_the_readmes_own_sweep_config_validates(tmp_path):
    """The README's first config, with the demo's data and the builtin model in place of a Hub
    model (nothing can be downloaded here)."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", readme, re.S).group(1)
    config = yaml.safe_load(block)
    assert {"model", "data", "search_space"} <= set(config)
    path = tmp_path / "my_sweep.yaml"
    path.write_text(block)
    cfg, derived = load_config(path, [
        "model.name_or_path=builtin:tiny-llama",
        f"data.train={EXAMPLES / 'data/pricing_train.jsonl'}",
        f"data.eval={EXAMPLES / 'data/pricing_eval.jsonl'}"])
    assert cfg.search.metric in cfg.reported_metrics


def test_the_sweep_dir_page_names_every_file_the_sweep_writes():
    """docs/reference/sweep-dir.md is the contract: every name in sweepdir/names.py (the one
    place the code names sweep-dir files) has its row."""
    from orchestrator.sweepdir import names

    page = (DOCS / "reference" / "sweep-dir.md").read_text()
    declared = {k: v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)}
    assert len(declared) >= 10
    missing = [f"{k} = {v!r}" for k, v in declared.items() if f"`{v}" not in page]
    assert not missing, f"docs/reference/sweep-dir.md does not describe {missing}"
