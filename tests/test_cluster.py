"""Sweeps on a real multi-node Ray cluster, all of it on 127.0.0.1.

Three Ray nodes (a head and two workers, one CPU each) are started by ``ray.cluster_utils``;
the sweep joins them with ``--address`` as it would join any cluster. Trials must land on more
than one node and every result, checkpoint and the winner must be found under storage.path,
here a bucket of a real S3-compatible server on 127.0.0.1 (tests/s3_server.py); a shared
folder must be seen by every node, and a plain local path is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

from orchestrator.cli import main

from .conftest import ROOT, cli, ray_started, write_config
from .s3_server import listing, s3_server


BUCKET = "sweeps-bucket"


@pytest.fixture(scope="module")
def s3():
    """An S3-compatible server on 127.0.0.1 with a bucket; this module's processes (the Ray
    nodes, the CLI) find it through the usual AWS_* variables, as they would find S3."""
    before = dict(os.environ)
    with s3_server(BUCKET) as env:
        os.environ.update(env)
        try:
            yield env
        finally:
            os.environ.clear()
            os.environ.update(before)


@pytest.fixture(scope="module")
def ray_cluster(tiny_model_dir, s3):
    from ray.cluster_utils import Cluster

    # Its own temp dir: the cluster's address file must not send other tests' local Ray
    # there (short, for Ray's socket paths).
    temp_dir = tempfile.mkdtemp(prefix="qs-cl-", dir="/tmp")
    cluster = Cluster(initialize_head=True, head_node_args={
        "node_ip_address": "127.0.0.1", "num_cpus": 1, "include_dashboard": False,
        "temp_dir": temp_dir})
    try:
        for _ in range(2):
            cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1, temp_dir=temp_dir)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _sweep_config(tmp_path, name: str, **sections):
    return write_config(
        tmp_path / f"{name}.yaml",
        data={"max_eval_samples": 40},
        training={"max_steps": 20, "eval_steps": 10},
        search_space={"training.learning_rate": {"choice": [3e-3, 2e-3, 1e-3]}},
        search={"algorithm": "grid"},
        scheduler={"type": "none"},
        storage={"path": str(tmp_path / "shared"), "name": name, **sections.pop("storage", {})},
        **sections,
    )


def run_here(capsys, *args: str) -> tuple[int, str]:
    """``qlora-sweep run ARGS`` in this process, for a run refused before any trial (the
    interpreter's start is not what is tested): its exit code and stderr. A Ray it joined
    for the checks is left again."""
    code = main(["run", *args])
    err = capsys.readouterr().err
    assert not ray_started(), "the refused run left Ray connected"
    return code, err


def _probe(ray_cluster, code: str, env: dict | None = None) -> list:
    """Run ``code`` in a fresh Python joined to the cluster; the values it prints as reprs."""
    script = (f"from orchestrator.run.ray_session import init_ray\n"
              f"init_ray({ray_cluster.address!r})\n" + textwrap.dedent(code))
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [eval(line) for line in proc.stdout.splitlines() if line.startswith(("(", "["))]


def test_a_shared_folder_seen_by_every_node_is_accepted(ray_cluster, tmp_path):
    """Every node reads back a probe file written in the shared folder (here all three nodes
    share this machine's disk); a cloud URI needs no probe."""
    config = _sweep_config(tmp_path, "shared", storage={"shared": True})
    [shared, cloud] = _probe(ray_cluster, f"""\
        from orchestrator.run.cluster import check_shared_storage
        from orchestrator.config.loading import load_config
        cfg, _ = load_config({str(config)!r})
        print(repr(check_shared_storage(cfg, {str(tmp_path / "shared")!r})))
        print(repr(check_shared_storage(cfg, "s3://{BUCKET}/x")))
        """)
    assert shared == [] and cloud == []
    assert not list((tmp_path / "shared").glob(".qlora-sweep-probe-*"))  # removed again


def test_a_sweep_in_cloud_storage_keeps_everything_in_the_bucket(ray_cluster, s3, tmp_path,
                                                                  capsys):
    uri = f"s3://{BUCKET}/team/cloud"
    config = write_config(
        tmp_path / "cloud.yaml",
        data={"max_eval_samples": 40},
        training={"max_steps": 20, "eval_steps": 10},
        # Two trials at once: no node has room for both (one CPU each), so two nodes train.
        search_space={"training.learning_rate": {"choice": [3e-3, 2e-3]}},
        search={"algorithm": "optuna", "num_trials": 2},
        scheduler={"type": "none"},
        storage={"path": f"s3://{BUCKET}/team", "name": "cloud"},
    )
    proc = cli("run", str(config), "--address", ray_cluster.address, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert f"sweep dir: {uri}" in log and f"qlora-sweep status {uri} --watch" in log
    files = listing(s3, uri)
    for name in ("sweep.yaml", "baseline.json", "status.json", "leaderboard.csv", "best.json",
                 "optuna.journal", "tuner.pkl"):
        assert name in files, sorted(files)
    assert any(f.startswith("baseline/events.out.tfevents.") for f in files)
    assert any(f.startswith("experiment_state-") for f in files)
    assert {"tokenized/train.parquet", "tokenized/eval.parquet"} <= set(files)
    from orchestrator.sweepdir.remote import mirror_dir
    from trainables.storage import read_text

    status = json.loads(read_text(f"{uri}/status.json"))
    trials = status["trials"]
    assert len(trials) == 2 and all(t["status"] == "completed" for t in trials), trials
    assert len({t["node_id"] for t in trials}) >= 2  # placed on at least two nodes
    assert status["driver"]["heartbeat_at"] >= status["started_at"]  # the heartbeat, in the bucket
    for t in trials:
        trial = f"trial_{t['trial_id']}/"
        mine = [f[len(trial):] for f in files if f.startswith(trial)]
        assert "progress.csv" in mine and any(f.startswith("events.out.tfevents.") for f in mine)
        assert any(f.endswith("/adapter_model.safetensors") for f in mine), mine
    best = json.loads(read_text(f"{uri}/best.json"))
    assert best["checkpoint_path"].startswith(f"{uri}/trial_{best['trial_id']}/checkpoint_")
    assert best["checkpoint_path"].removeprefix(f"{uri}/") + "/adapter_config.json" in files
    print("placement:", {t["trial_id"]: t["node_id"][:8] for t in trials})

    # From "another machine": no local copy; every command reads the bucket.
    shutil.rmtree(mirror_dir(uri))
    shown = cli("status", uri, "--format", "json", timeout=120)
    assert shown.returncode == 0, shown.stderr[-3000:]
    data = json.loads(shown.stdout)
    assert data["state"] == "finished" and data["path"] == uri and len(data["trials"]) == 2
    assert cli("report", uri, timeout=300).returncode == 0
    # Reading commands leave the tokenized data in the bucket; resume asks for it.
    assert not (mirror_dir(uri) / "tokenized").exists()
    from orchestrator.sweepdir.remote import Mirror
    from orchestrator.sweepdir.names import TOKENIZED
    from orchestrator.sweepdir.tokenized import load

    assert Mirror(uri).pull(under=TOKENIZED) == 2
    prepared = load(mirror_dir(uri))
    assert prepared["seed"] == 42 and prepared["train"].num_rows > 0
    assert "input_ids" in prepared["eval"].column_names
    bundled = cli("promote", uri, timeout=600, env={"HF_TOKEN": None})
    assert bundled.returncode == 0, (bundled.stdout + bundled.stderr)[-3000:]
    files = listing(s3, uri)
    assert {"report/report.html", "promoted/adapter_model.safetensors", "promoted/README.md",
            "promotions.jsonl"} <= set(files)
    # The same name again is refused, before anything starts.
    code, err = run_here(capsys, str(config), "--address", ray_cluster.address)
    assert code == 2 and f"the sweep dir {uri} already exists" in err


def test_a_bucket_that_cannot_be_written_is_a_preflight_error(s3, tmp_path, capsys):
    config = write_config(tmp_path / "nobucket.yaml",
                          storage={"path": "s3://no-such-bucket/sweeps", "name": "x"})
    code, err = run_here(capsys, str(config))
    assert code == 2, err
    assert "storage.path = 's3://no-such-bucket/sweeps': cannot write there" in err
    assert "Fix: check the bucket name and this machine's credentials" in err
    assert "Traceback" not in err


def test_a_local_storage_path_on_several_nodes_is_refused(ray_cluster, tmp_path, capsys):
    config = _sweep_config(tmp_path, "local-only")
    code, err = run_here(capsys, str(config), "--address", ray_cluster.address)
    assert code == 2, err
    assert "a local path, on a Ray cluster of 3 nodes" in err
    assert "Fix: put storage.path on a shared file system" in err and "storage.shared: true" in err
    assert "Traceback" not in err
    assert not (tmp_path / "shared" / "local-only").exists()


def test_a_request_no_node_can_ever_meet_fails_fast(ray_cluster, tmp_path, capsys):
    for resources, words in (({"gpu": 1}, "Fix: set resources.gpu: 0 to train on CPU"),
                             ({"cpu": 4}, "lower resources.cpu")):
        config = _sweep_config(tmp_path, "never-" + "-".join(resources),
                               resources=resources, storage={"shared": True})
        code, err = run_here(capsys, str(config), "--address", ray_cluster.address)
        assert code == 2, err
        assert "no node of the Ray cluster can run a trial" in err
        assert "127.0.0.1: 1 CPU, 0 GPU" in err and "no autoscaler" in err
        assert words in err and "Traceback" not in err


def test_trials_wait_for_node_types_the_autoscaler_can_add(ray_cluster, tmp_path):
    """A cluster launched by ``ray up`` keeps its node types in ~/ray_bootstrap_config.yaml on
    the head; a GPU request fits a type there, so trials wait instead of failing."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "ray_bootstrap_config.yaml").write_text(textwrap.dedent("""\
        head_node_type: head
        available_node_types:
          head: {resources: {CPU: 8}, max_workers: 0}
          gpu_a10g: {resources: {CPU: 8, GPU: 1, "accelerator_type:A10G": 1}, max_workers: 4}
        """))
    results = _probe(ray_cluster, f"""\
        from orchestrator.run.cluster import check_placement, max_concurrent
        from orchestrator.config.loading import load_config
        for overrides in (["resources.gpu=1"],
                          ["resources.gpu=1", "resources.accelerator_type=A10G"],
                          ["resources.gpu=1", "resources.accelerator_type=H100"]):
            cfg, _ = load_config({str(_sweep_config(tmp_path, "probe"))!r}, overrides)
            problems, notes = check_placement(cfg)
            print(repr((problems, notes, max_concurrent(cfg))))
        """, env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    (p1, n1, c1), (p2, n2, c2), (p3, n3, _) = results
    assert not p1 and "the autoscaler can add gpu_a10g nodes" in n1[0] and c1 == 4
    assert not p2 and n2 and c2 == 4
    assert "accelerator_type:H100=0.001" in p3[0] and "gpu_a10g (max 4)" in p3[0]
    assert "Fix: set resources.accelerator_type to one the cluster has" in p3[0] and not n3


def test_the_gpu_memory_probe_goes_to_each_gpu_type(ray_cluster):
    """resources.gpu: auto reads one GPU of each type a trial can land on: a node that declares
    a GPU of type A10G (Ray's accelerator_type:A10G resource, as on cluster.yaml's workers)
    joins, the probe is pinned to it, and runs there. There is no GPU on this machine, so the
    probe fails on that node, and says so as a user error instead of a traceback (a node whose
    torch has no CUDA does the same on a real cluster). A type no node has is named when its
    probe times out."""
    node = ray_cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1, num_gpus=1,
                                resources={"accelerator_type:A10G": 1})
    try:
        ray_cluster.wait_for_nodes()
        [kinds, error, unanswered] = _probe(ray_cluster, """\
            from orchestrator.errors import UserError
            from orchestrator.run.auto_resources import gpu_memory_by_type, gpu_types
            kinds = gpu_types(None)
            print(repr(kinds))
            try:
                gpu_memory_by_type(kinds, timeout=150)
                print(repr(["no error"]))
            except UserError as err:
                print(repr([err.render()]))
            try:  # a type no node has, nor can get: its probe waits, then says which
                gpu_memory_by_type(["H100"], timeout=3)
            except UserError as err:
                print(repr([err.render()]))
            """)
    finally:
        ray_cluster.remove_node(node)
    assert kinds == ["A10G"]
    (text,) = error
    assert "no GPU worker of H100 answered within 3 s" in unanswered[0]
    assert "reading the memory of a GPU of A10G failed on its worker" in text, text
    assert "Fix: check that torch sees the GPU there" in text and "Traceback" not in text
