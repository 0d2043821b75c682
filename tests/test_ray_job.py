"""``ray job submit ... -- qlora-sweep run ...`` against a real Ray head on 127.0.0.1.

The head is started with ``ray start --head --block`` by this test (and stopped by its process
group id, never by name). The repo is shipped by Ray's runtime environment (``--working-dir``);
the job's status must be the sweep's exit status and ``ray job logs`` must show the leaderboard.
"""

from __future__ import annotations

import calendar
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .conftest import ROOT, free_port, stop_group, write_config

BIN = Path(sys.executable).parent


def _env() -> dict:
    return {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "RAY_USAGE_STATS_ENABLED": "0",
            # Ray 2.60 heads use token auth (~/.ray/auth_token); its CLI sends the token
            # only in token mode.
            "RAY_AUTH_MODE": "token"}


def ray_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=_env())


@pytest.fixture(scope="module")
def ray_head(tiny_model_dir, tmp_path_factory):
    gcs, dashboard = free_port(), free_port()
    # Ports of their own: another test's local Ray may hold Ray's fixed defaults (the
    # dashboard agent's 52365 among them), and a job head without its agent takes no job.
    ports = [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port")]
    # Its own temp dir: `ray start` records its address there, and other tests' local Ray
    # must not find it (short, for Ray's socket paths).
    temp_dir = tempfile.mkdtemp(prefix="qs-job-", dir="/tmp")
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--temp-dir={temp_dir}",
         f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         "--include-dashboard=true", "--num-cpus=2", "--disable-usage-stats", *ports],
        cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 180
        while ray_cli("job", "list", "--address", address, timeout=60).returncode != 0:
            assert head.poll() is None, "ray start --head exited"
            assert time.monotonic() < deadline, "the job server never answered"
            time.sleep(2)
        yield address
    finally:
        # `ray start --block` waits long for its children; nothing of it is kept.
        stop_group(head, grace=5)
        _kill_leftovers(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _kill_leftovers(temp_dir: str) -> None:
    """Ray processes of the head this fixture started (their command lines name its temp dir)
    that left its process group."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and temp_dir in (proc / "cmdline").read_text():
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


def _submit(address: str, job_id: str, *entrypoint: str) -> subprocess.CompletedProcess:
    deadline = time.monotonic() + 120
    while True:
        proc = ray_cli("job", "submit", "--address", address, "--submission-id", job_id,
                       "--working-dir", ".", "--", *entrypoint, timeout=900)
        # The job server answers before its agent can take jobs; Ray says to try again.
        if "No available agent to submit job" not in proc.stderr + proc.stdout:
            return proc
        assert time.monotonic() < deadline, proc.stderr[-2000:]
        time.sleep(3)


def _job_status(address: str, job_id: str) -> str:
    out = ray_cli("job", "status", "--address", address, job_id, timeout=60).stdout
    # e.g. "Job 'qlora-sweep-ok' succeeded"
    return next((s.upper() for s in ("succeeded", "failed", "stopped", "running", "pending")
                 if f"Job '{job_id}' {s}" in out), out)


def test_a_sweep_submitted_as_a_ray_job_succeeds_and_logs_its_leaderboard(ray_head, tmp_path):
    config = write_config(
        tmp_path / "job.yaml",
        data={"max_eval_samples": 40},
        # One fixed training with the default search (Optuna), which refused an empty space
        # with a RuntimeError before.
        search_space={},
        search={"num_trials": 1},
        lora={"r": 8},
        training={"max_steps": 20, "eval_steps": 10, "learning_rate": 3e-3},
        scheduler={"type": "none"},
        storage={"path": str(tmp_path / "sweeps"), "name": "job"},
    )
    submitted = time.time()
    proc = _submit(ray_head, "qlora-sweep-ok", "qlora-sweep", "run", str(config))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert _job_status(ray_head, "qlora-sweep-ok") == "SUCCEEDED"
    logs = ray_cli("job", "logs", "--address", ray_head, "qlora-sweep-ok", timeout=60).stdout
    assert "best trial" in logs and "base model" in logs and "1 trial: 1 completed" in logs
    status = json.loads((tmp_path / "sweeps" / "job" / "status.json").read_text())
    assert status["state"] == "finished"
    first = min(calendar.timegm(time.strptime(t["started_at"], "%Y-%m-%dT%H:%M:%SZ"))
                for t in status["trials"])
    print(f"submit to first trial start: {first - submitted:.1f} s")


def test_a_sweep_that_fails_is_a_failed_job(ray_head, tmp_path):
    # Refused before the job's driver starts any work (a cluster that cannot place a trial is
    # test_cluster's): the job's status is the sweep's exit status, its log our one message.
    config = write_config(tmp_path / "bad.yaml", resources={"gpu": 2},
                          storage={"path": str(tmp_path / "sweeps"), "name": "bad"})
    proc = _submit(ray_head, "qlora-sweep-bad", "qlora-sweep", "run", str(config))
    assert proc.returncode != 0
    assert _job_status(ray_head, "qlora-sweep-bad") == "FAILED"
    logs = ray_cli("job", "logs", "--address", ray_head, "qlora-sweep-bad", timeout=60).stdout
    assert "resources.gpu = 2: a trial trains on one GPU" in logs and "Traceback" not in logs
