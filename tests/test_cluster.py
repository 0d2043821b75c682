"""Sweeps on a real multi-node Ray cluster, all of it on 127.0.0.1.

Three Ray nodes (a head and two workers, one CPU each) are started by ``ray.cluster_utils``;
the sweep joins them with ``--address`` as it would join any cluster. Trials must land on more
than one node and every result, checkpoint and the winner must be found under storage.path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

from .conftest import ROOT, cli, write_config


@pytest.fixture(scope="module")
def ray_cluster(tiny_model_dir):
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


def test_a_sweep_spreads_over_the_nodes_and_gathers_everything(ray_cluster, tmp_path):
    config = _sweep_config(tmp_path, "multi", storage={"shared": True})
    proc = cli("run", str(config), "--address", ray_cluster.address, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    sweep = tmp_path / "shared" / "multi"
    status = json.loads((sweep / "status.json").read_text())
    trials = status["trials"]
    assert len(trials) == 3 and all(t["status"] == "completed" for t in trials), trials
    nodes = {t["node_id"] for t in trials}
    assert None not in nodes and len(nodes) >= 2, nodes  # placed on at least two nodes
    for t in trials:
        trial_dir = sweep / f"trial_{t['trial_id']}"
        assert [ln.split(",")[0] for ln in (trial_dir / "progress.csv").read_text().splitlines()]
        assert any(trial_dir.glob("checkpoint_*/adapter_model.safetensors")), trial_dir
        assert any(trial_dir.glob("events.out.tfevents.*"))
    best = json.loads((sweep / "best.json").read_text())
    assert best["checkpoint_path"].startswith(str(sweep))
    assert (tmp_path / "shared" / "multi" / "leaderboard.csv").is_file()
    print("placement:", {t["trial_id"]: t["node_id"][:8] for t in trials})


def test_a_local_storage_path_on_several_nodes_is_refused(ray_cluster, tmp_path):
    config = _sweep_config(tmp_path, "local-only")
    proc = cli("run", str(config), "--address", ray_cluster.address, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr
    assert "a local path, on a Ray cluster of 3 nodes" in err
    assert "Fix: put storage.path on a shared file system" in err and "storage.shared: true" in err
    assert "Traceback" not in err
    assert not (tmp_path / "shared" / "local-only").exists()


def test_a_request_no_node_can_ever_meet_fails_fast(ray_cluster, tmp_path):
    for resources, words in (({"gpu": 1}, "Fix: set resources.gpu: 0 to train on CPU"),
                             ({"cpu": 4}, "lower resources.cpu")):
        config = _sweep_config(tmp_path, "never-" + "-".join(resources),
                               resources=resources, storage={"shared": True})
        proc = cli("run", str(config), "--address", ray_cluster.address, timeout=300)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "no node of the Ray cluster can run a trial" in proc.stderr
        assert "127.0.0.1: 1 CPU, 0 GPU" in proc.stderr and "no autoscaler" in proc.stderr
        assert words in proc.stderr and "Traceback" not in proc.stderr


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
    probe = textwrap.dedent(f"""\
        from orchestrator.cluster import check_placement, max_concurrent
        from orchestrator.loading import load_config
        from orchestrator.sweep import init_ray
        init_ray({ray_cluster.address!r})
        for overrides in (["resources.gpu=1"],
                          ["resources.gpu=1", "resources.accelerator_type=A10G"],
                          ["resources.gpu=1", "resources.accelerator_type=H100"]):
            cfg, _ = load_config({str(_sweep_config(tmp_path, "probe"))!r}, overrides)
            problems, notes = check_placement(cfg)
            print(repr((problems, notes, max_concurrent(cfg))))
        """)
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [eval(line) for line in proc.stdout.splitlines() if line.startswith("(")]
    (p1, n1, c1), (p2, n2, c2), (p3, n3, _) = results
    assert not p1 and "the autoscaler can add gpu_a10g nodes" in n1[0] and c1 == 4
    assert not p2 and n2 and c2 == 4
    assert "accelerator_type:H100=0.001" in p3[0] and "gpu_a10g (max 4)" in p3[0]
    assert "Fix: set resources.accelerator_type to one the cluster has" in p3[0] and not n3
