"""``qlora-sweep report`` on the shared smoke sweep: its files, its HTML, and a screenshot of the
HTML rendered by a real headless Chromium (Debian's ``chromium``)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from .conftest import cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PLOTS = ("curves.png", "history.png", "importances.png", "parallel_coordinates.png",
         "slices.png")


def _png(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    return imread(str(path))


def _not_blank(image: np.ndarray) -> bool:
    """More than a single colour: some pixels differ clearly from the most common one."""
    rgb = image[..., :3].reshape(-1, 3)
    background = np.median(rgb, axis=0)
    return float((np.abs(rgb - background).sum(axis=1) > 0.2).mean()) > 0.02


@pytest.fixture(scope="module")
def report(smoke_sweep) -> Path:
    shutil.rmtree(smoke_sweep.path / "report", ignore_errors=True)
    proc = cli("report", str(smoke_sweep.path), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = smoke_sweep.path / "report" / "report.html"
    assert f"report: {path}" in proc.stdout
    return path


def _finished_in_study(sweep: Path) -> tuple[int, bool]:
    """Trials the sweep's Optuna study holds as COMPLETE (those ASHA stopped are PRUNED), and
    whether a searched setting took more than one value among them."""
    import optuna

    from orchestrator.run.tuner import optuna_storage

    storage = optuna_storage(str(sweep))
    (name,) = optuna.get_all_study_names(storage)
    done = [t for t in optuna.load_study(study_name=name, storage=storage).trials
            if t.state == optuna.trial.TrialState.COMPLETE]
    varied = any(len({str(t.params.get(k)) for t in done}) > 1 for k in done[0].params) \
        if done else False
    return len(done), varied


def test_report_writes_html_and_plots(report, smoke_sweep):
    page = report.read_text()
    plots = list(PLOTS)
    # Optuna's importances and parallel coordinates are drawn over finished trials only:
    # with fewer than three (two) of them (which ASHA's timing decides in the smoke sweep),
    # the page says why there is none
    finished, varied = _finished_in_study(smoke_sweep.path)
    for name, needs in (("importances.png", 3), ("parallel_coordinates.png", 2)):
        if finished < needs or not varied:
            plots.remove(name)
            assert not (report.parent / name).exists()
            assert (f"needs at least {needs} completed trials" in page if finished < needs
                    else "no searched setting took more than one value" in page)
    for name in plots:
        image = _png(report.parent / name)
        assert image.shape[0] > 200 and image.shape[1] > 400, name
        assert _not_blank(image), name
    # The one file opens offline: plots are embedded, nothing is fetched from elsewhere.
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', page)) == len(plots)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page
    assert "journal (optuna.journal)" in page
    # The leaderboard: every trial, the best one marked, the baseline row.
    best = json.loads((smoke_sweep.path / "best.json").read_text())
    status = json.loads((smoke_sweep.path / "status.json").read_text())
    for trial in status["trials"]:
        assert f"<td>{trial['trial_id']}</td>" in page
    assert re.search(rf'<tr class="best"><td>1</td><td>{best["trial_id"]}</td>', page)
    assert '<tr class="baseline"><td></td><td>base model</td>' in page
    assert re.search(r"stopped early at step (10|20)", page)
    assert re.search(r"errored( \(\d restarts?\))?: ", page)
    baseline = json.loads((smoke_sweep.path / "baseline.json").read_text())["eval_loss"]
    assert f"eval_loss {baseline:.4f} (before fine-tuning)" in page
    # The embedded curves are the PNG written beside the page.
    embedded = re.search(r'alt="curves" src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(embedded) == (report.parent / "curves.png").read_bytes()


def test_report_renders_in_headless_chromium(report, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400",
         "--hide-scrollbars", f"--screenshot={shot}", report.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-3000:]
    image = _png(shot)
    assert image.shape[:2] == (2400, 1280)
    assert _not_blank(image)
    # The plots were drawn: the lower part of the page (below the tables) is not empty either.
    assert _not_blank(image[1200:])


def test_report_without_an_optuna_journal_builds_the_study_from_the_leaderboard(
        smoke_sweep, tmp_path):
    copy = tmp_path / "random_sweep"
    shutil.copytree(smoke_sweep.path, copy, ignore=shutil.ignore_patterns("checkpoint_*", "report"))
    (copy / "optuna.journal").unlink()
    proc = cli("report", str(copy), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = (copy / "report" / "report.html").read_text()
    assert "built from the leaderboard" in page
    assert (copy / "report" / "history.png").is_file()


def test_report_bad_input(smoke_sweep, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(smoke_sweep.path / "sweep.yaml", empty / "sweep.yaml")
    for path, words in ((tmp_path / "nope", "does not exist"),
                        (empty, "no trial has started yet")):
        proc = cli("report", str(path), timeout=120)
        assert proc.returncode != 0
        assert words in proc.stderr and "Fix:" in proc.stderr and "Traceback" not in proc.stderr
