"""A sweep dir or Hub repo someone else wrote is read without running code from it.

Every pickled file of a finished sweep dir (Ray's ``tuner.pkl``, ``searcher-state*.pkl`` and
``params.pkl``, the Trainer's ``training_args.bin``, ``optimizer.pt``, ``scheduler.pt``,
``rng_state.pth``) is replaced by a pickle that writes a file when it is unpickled, then every
command that reads a sweep dir runs on it through the real CLI: nothing may execute. An adapter
on the Hub stored only as ``adapter_model.bin`` is refused unless the user opts in.
"""

from __future__ import annotations

import json
import pickle
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import ForkedCli, cli, served_url, start_cli, stop
from .hub_server import HubServer

WRITE = "hf_sentinel_write_token_untrusted"


class _Payload:
    """Unpickling this runs ``exec`` on code that appends a line to ``marker``."""

    def __init__(self, marker: Path, where: str):
        self.code = f"open({str(marker)!r}, 'a').write({where!r} + '\\n')"

    def __reduce__(self):
        return exec, (self.code,)


def _plant(folder: Path, marker: Path) -> list[Path]:
    """Replace every pickled file under ``folder`` with a payload; returns the files."""
    import torch

    planted = []
    for pattern in ("tuner.pkl", "searcher-state*.pkl", "params.pkl"):
        for path in folder.rglob(pattern):
            path.write_bytes(pickle.dumps(_Payload(marker, path.name)))
            planted.append(path)
    for name in ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        for path in folder.rglob(name):
            torch.save(_Payload(marker, path.name), path)
            planted.append(path)
    return planted


def _armed(marker: Path, planted: list[Path]) -> None:
    """The payloads do run when unpickled (so the test can fail)."""
    import torch

    pickle.loads(next(p for p in planted if p.suffix == ".pkl").read_bytes())
    torch.load(next(p for p in planted if p.name == "optimizer.pt"), weights_only=False)
    assert marker.read_text().splitlines() == [next(p for p in planted if p.suffix == ".pkl").name,
                                               "optimizer.pt"]
    marker.unlink()


@pytest.fixture
def shared_sweep(smoke_sweep, tmp_path) -> tuple[Path, Path, list[Path]]:
    """A copy of the finished smoke sweep with every pickle replaced by a payload."""
    sweep = tmp_path / "shared" / "smoke"
    shutil.copytree(smoke_sweep.path, sweep)
    marker = tmp_path / "executed.txt"
    planted = _plant(sweep, marker)
    names = {p.name for p in planted}
    assert {"tuner.pkl", "params.pkl", "training_args.bin", "optimizer.pt"} <= names, names
    assert any(n.startswith("searcher-state") for n in names), names
    _armed(marker, planted)
    return sweep, marker, planted


def _best_checkpoint(sweep: Path) -> Path:
    """The winner's checkpoint folder in the copied sweep dir."""
    best = json.loads((sweep / "best.json").read_text())
    return sweep / f"trial_{best['trial_id']}" / Path(best["checkpoint_path"]).name


def _tensorboard_serves(sweep: Path) -> None:
    board = start_cli("tensorboard", str(sweep), "--port", "0")
    try:
        deadline = time.monotonic() + 120
        url = served_url(board, deadline)
        runs: list = []
        while "baseline" not in runs:
            assert time.monotonic() < deadline, runs
            time.sleep(1)
            with urllib.request.urlopen(url + "data/runs", timeout=30) as response:
                runs = json.loads(response.read())
        with urllib.request.urlopen(url + "data/plugin/scalars/tags", timeout=30) as response:
            assert response.status == 200
    finally:
        stop(board)


def test_reading_a_sweep_dir_never_unpickles(shared_sweep, tmp_path):
    sweep, marker, _ = shared_sweep
    for args in (["status", str(sweep)], ["status", str(sweep), "--format", "json"],
                 ["status", str(sweep), "--format", "csv"], ["report", str(sweep)]):
        proc = cli(*args, timeout=600)
        assert proc.returncode == 0, (args, proc.stdout + proc.stderr)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
    _tensorboard_serves(sweep)
    # The commands that load torch: each in a process forked from one that imported it.
    with ForkedCli(tmp_path) as forked:
        proc = forked("promote", str(sweep), "--dry-run")
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        for adapter in (_best_checkpoint(sweep), sweep / "promoted"):
            proc = forked("generate", str(adapter), "Wireless mouse, 2.4 GHz",
                          "--max-new-tokens", "4")
            assert proc.returncode == 0, (adapter, proc.stdout + proc.stderr)
    assert not marker.exists(), f"a planted pickle ran: {marker.read_text()}"


def test_a_pickle_only_adapter_is_refused_unless_allowed(shared_sweep, tmp_path):
    from huggingface_hub import CommitOperationAdd, HfApi

    sweep, marker, _ = shared_sweep
    with HubServer(tokens={WRITE: "write"}, user="acme") as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": WRITE, "HF_HOME": str(tmp_path / "hf"),
               "HF_HUB_DISABLE_TELEMETRY": "1"}
        api = HfApi(endpoint=hub.url, token=WRITE)
        api.create_repo("acme/pickled")
        adapter_config = _best_checkpoint(sweep) / "adapter_config.json"
        payload = pickle.dumps(_Payload(marker, "adapter_model.bin"))
        api.create_commit("acme/pickled", commit_message="pickle-only adapter", operations=[
            CommitOperationAdd("adapter_config.json", str(adapter_config)),
            CommitOperationAdd("adapter_model.bin", payload)])
        head = hub.head("acme/pickled")

        with ForkedCli(tmp_path, env) as forked:
            for args in (["promote", str(sweep), "--repo-id", "acme/pickled"],
                         ["generate", "acme/pickled", "Wireless mouse"]):
                proc = forked(*args, timeout=600)
                out = proc.stdout + proc.stderr
                assert proc.returncode == 2, (args, out)
                assert "Traceback" not in out, out
                assert "adapter_model.bin" in out and "--allow-pickle" in out, out
        assert hub.head("acme/pickled") == head  # nothing pushed
        record = (sweep / "promotions.jsonl").read_text().splitlines()[-1]
        assert "pickle" in record
        assert not list((tmp_path / "hf").rglob("adapter_model.bin"))  # never downloaded
    assert not marker.exists(), f"a planted pickle ran: {marker.read_text()}"
