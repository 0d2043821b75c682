"""A cluster whose worker nodes cannot read the driver's files: the data and the custom scorer
module reach the trials through Ray (the trial spec), not through the driver's paths.

The head node (the driver's, no CPUs: nothing runs there) is started by ``ray.cluster_utils``;
the worker node by a process of its own in its own mount namespace (``unshare -m``) where an
empty tmpfs is mounted over the driver's folder, which holds the config, the data files and
the scorer module: on that node the folder is there but empty, as on a machine that never had
them. The shared storage (``storage.shared``) stays visible to both. One trial, 4 steps.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from .conftest import EXAMPLES, ROOT, cli, stop_group, write_config

SCORER = textwrap.dedent("""\
    def answered(predictions, references):
        return {"share": sum(bool(p.strip()) for p in predictions) / len(predictions)}
    """)


def _can_hide_folders() -> bool:
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


def _wait_for_nodes(address: str, count: int, worker: subprocess.Popen) -> None:
    script = textwrap.dedent(f"""\
        import time, ray
        from orchestrator.run.ray_session import init_ray
        init_ray({address!r})
        deadline = time.monotonic() + 90
        while sum(n["Alive"] for n in ray.nodes()) < {count}:
            assert time.monotonic() < deadline, "the worker node never joined"
            time.sleep(0.5)
        """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=150)
    assert proc.returncode == 0, (proc.stderr[-2000:], worker.poll(), worker.args)


@pytest.mark.skipif(shutil.which("unshare") is None or not _can_hide_folders(),
                    reason="hiding a folder from one Ray node needs `unshare -m` (root)")
def test_workers_that_cannot_read_the_drivers_folder_train_and_score(tiny_model_dir, tmp_path):
    from ray.cluster_utils import Cluster

    driver = tmp_path / "driver"  # only the driver's node sees what is in here
    driver.mkdir()
    for name in ("pricing_train.jsonl", "pricing_eval.jsonl"):
        shutil.copy(EXAMPLES / "data" / name, driver / name)
    (driver / "driver_scorers.py").write_text(SCORER)
    config = write_config(
        driver / "sweep.yaml",
        data={"train": str(driver / "pricing_train.jsonl"),
              "eval": str(driver / "pricing_eval.jsonl"), "max_eval_samples": 16},
        training={"max_steps": 4, "eval_steps": 2, "logging_steps": 2},
        search_space={"training.learning_rate": {"choice": [3e-3]}},
        search={"algorithm": "grid", "metric": "task_answered_share"},
        scheduler={"type": "none"},
        evaluation={"scorers": [{"type": "custom", "function": "driver_scorers:answered",
                                 "metrics": {"share": "max"}}],
                    "samples": 4, "max_new_tokens": 4},
        storage={"path": str(tmp_path / "shared"), "name": "apart", "shared": True,
                 "keep_checkpoints": 2},
        # run promotes its winner at its end (no champion yet: nothing to judge), in its own
        # process; the second promote below is judged against it on the cluster
        promote={"repo_id": "acme/apart"},
    )

    temp_dir = tempfile.mkdtemp(prefix="qs-ns-", dir="/tmp")
    head = Cluster(initialize_head=True, head_node_args={
        "node_ip_address": "127.0.0.1", "num_cpus": 0, "include_dashboard": False,
        "temp_dir": temp_dir})
    node = textwrap.dedent(f"""\
        import signal, time
        import ray._private.node, ray._private.parameter
        from trainables.compat.ray_private import keep_loopback_node_ip
        keep_loopback_node_ip()
        params = ray._private.parameter.RayParams(
            gcs_address={head.address!r}, node_ip_address="127.0.0.1", num_cpus=2, num_gpus=0,
            object_store_memory=150 * 2**20, min_worker_port=0, max_worker_port=0,
            node_manager_port=0, include_log_monitor=False)
        ray._private.node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
        signal.signal(signal.SIGTERM, lambda *_: exit(0))  # exits through Ray's own clean-up
        while True:
            time.sleep(1)
        """)
    (tmp_path / "node.py").write_text(node)
    with open(tmp_path / "node.log", "w") as worker_log:  # read when it fails to join
        worker = subprocess.Popen(  # the worker node, in a mount namespace of its own
            ["unshare", "-m", "sh", "-c",
             f"mount -t tmpfs none {driver} && exec {sys.executable} {tmp_path / 'node.py'}"],
            cwd=ROOT, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True)
    sweep = tmp_path / "shared" / "apart"
    from .hub_server import HubServer

    token = "hf_sentinel_write_token_cluster"
    with HubServer(tokens={token: "write"}, user="acme") as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": token, "HF_HOME": str(driver / "hf"),
               "HF_HUB_DISABLE_TELEMETRY": "1"}
        try:
            _wait_for_nodes(head.address, 2, worker)
            proc = cli("run", str(config), "--address", head.address, env=env, timeout=900)
            if proc.returncode == 0:
                promoted = _promote_on_the_cluster(sweep, head.address, env=env)
        finally:
            stop_group(worker, grace=30)
            head.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "promoting the winner" in log and "acme/apart" in log, log[-3000:]
    status = json.loads((sweep / "status.json").read_text())
    (trial,) = status["trials"]
    assert trial["status"] == "completed"
    # It trained on the worker node (the head has no CPUs), with the data and the scorer the
    # driver shipped: the baseline and the trial scored with the custom scorer.
    assert json.loads((sweep / "baseline.json").read_text())["task_answered_share"] >= 0
    rows = list(csv.DictReader(open(sweep / f"trial_{trial['trial_id']}" / "progress.csv")))
    assert [r["step"] for r in rows] == ["2", "4"]
    assert all(0 <= float(r["task_answered_share"]) <= 1 for r in rows)

    # promote --address: champion and challenger judged on the worker node, which sees
    # neither the champion downloaded under the driver's folder nor the data or the scorer.
    out, record = promoted
    assert "champion   task_answered_share" in out and "challenger task_answered_share" in out
    assert 0 <= record["champion"]["value"] <= 1 and record["metric"] == "task_answered_share"


def _promote_on_the_cluster(sweep: Path, address: str, *, env: dict):
    """The winner was promoted by ``run``; now its other checkpoint, with ``--address``,
    judged against it there; (output, its record)."""
    best = json.loads((sweep / "best.json").read_text())
    trial = sweep / f"trial_{best['trial_id']}"
    other = next(c for c in sorted(trial.glob("checkpoint_*"))
                 if c.name != Path(best["checkpoint_path"]).name)
    best.update(checkpoint_path=str(other),
                step=json.loads((other / "trainer_state.json").read_text())["global_step"])
    (sweep / "best.json").write_text(json.dumps(best))
    shutil.rmtree(sweep / "promoted")
    second = cli("promote", str(sweep), "--address", address, env=env, timeout=600)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-3000:]
    return out, json.loads((sweep / "promotions.jsonl").read_text().splitlines()[-1])
