"""What the connected Ray cluster can run, now and once its autoscaler adds nodes.

Checked before the sweep dir is made (``run``) so that a sweep never waits forever for a node
that cannot exist, and never scatters its files over nodes that do not share them:

- a trial's request (CPUs, GPUs, accelerator type) must fit an alive node, or a node type the
  autoscaler can add (``max_workers`` > 0); trials then wait for the autoscaler;
- on a cluster of more than one node (or one that can grow), a local ``storage.path`` must be
  a shared file system (``storage.shared: true``), and every alive node must see it.

The autoscaler's node types come from the cluster config Ray keeps in its GCS (autoscaler v2,
KubeRay) or, on a cluster started with ``ray up``, from ``~/ray_bootstrap_config.yaml`` on the
head node, where ``ray job submit`` runs the sweep's driver.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.schema import SweepConfig
from ..errors import UserError
from .resource_units import fits, units

log = logging.getLogger(__name__)


BOOTSTRAP_CONFIG = "ray_bootstrap_config.yaml"


@dataclass
class NodeType:
    name: str
    resources: dict[str, float]
    max_workers: int  # -1: no limit


def trial_request(cfg: SweepConfig) -> dict[str, float]:
    """The Ray resources one trial asks for (``resources.gpu: auto`` resolved first, see
    ``auto_resources.resolve_auto``)."""
    if cfg.resources.gpu == "auto":
        raise ValueError("resources.gpu: auto must be resolved before placing trials")
    request = {"CPU": cfg.resources.cpu, "GPU": cfg.resources.gpu}
    if cfg.resources.memory_gb:
        request["memory"] = float(int(cfg.resources.memory_gb * 2**30))
    if cfg.resources.accelerator_type:
        # Ray puts 1 unit of accelerator_type:<name> on nodes with that accelerator; a small
        # share of it constrains placement without limiting how many trials share the node.
        request[f"accelerator_type:{cfg.resources.accelerator_type}"] = 0.001
    return request


def _fits(resources: dict[str, float], request: dict[str, float]) -> bool:
    return all(units(resources.get(k, 0)) >= units(v) for k, v in request.items() if v > 0)


def _describe(resources: dict[str, float]) -> str:
    accel = [k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:")]
    text = f"{resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU"
    if resources.get("memory"):
        text += f", {resources['memory'] / 2**30:.1f} GiB memory"
    return text + (f" ({', '.join(accel)})" if accel else "")


def autoscaler_node_types() -> list[NodeType] | None:
    """The node types the cluster's autoscaler can add, or ``None`` if it has none."""
    from trainables.compat.ray_private import cluster_config

    config = cluster_config()  # None: no GCS config; fall back to the launcher's file
    if config is not None and config.node_group_configs:
        return [NodeType(g.name, dict(g.resources), int(g.max_count))
                for g in config.node_group_configs]
    bootstrap = Path.home() / BOOTSTRAP_CONFIG
    if bootstrap.is_file():
        import yaml

        return launcher_node_types(yaml.safe_load(bootstrap.read_text()) or {})
    return None


def launcher_node_types(launcher: dict[str, Any]) -> list[NodeType]:
    """The node types of a cluster launcher config (``cluster.yaml``); the head adds none."""
    types = launcher.get("available_node_types") or {}
    head = launcher.get("head_node_type")
    return [NodeType(name, {k: float(v) for k, v in (spec.get("resources") or {}).items()},
                     0 if name == head else int(spec.get("max_workers", 0)))
            for name, spec in types.items()]


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def check_placement(cfg: SweepConfig, *, nodes: list[dict] | None = None,
                    node_types: list[NodeType] | None = None) -> tuple[list[str], list[str]]:
    """``(problems, notes)`` for placing one trial on the cluster."""
    nodes = alive_nodes() if nodes is None else nodes
    node_types = autoscaler_node_types() if node_types is None else node_types
    request = trial_request(cfg)
    if any(_fits(n.get("Resources", {}), request) for n in nodes):
        return [], []
    growable = [t for t in node_types or [] if t.max_workers != 0 and _fits(t.resources, request)]
    asked = ", ".join(f"memory={v / 2**30:.1f} GiB" if k == "memory" else f"{k}={v:g}"
                      for k, v in request.items() if v > 0)
    if growable:
        names = ", ".join(t.name for t in growable)
        return [], [f"no node can run a trial yet ({asked}); the autoscaler can add {names} "
                    f"nodes: trials wait for them"]
    have = "; ".join(f"{n.get('NodeManagerAddress')}: {_describe(n.get('Resources', {}))}"
                     for n in nodes) or "no nodes"
    if node_types:
        have += "; autoscaler node types: " + "; ".join(
            f"{t.name} (max {t.max_workers}): {_describe(t.resources)}" for t in node_types)
    else:
        have += "; no autoscaler"
    if request["GPU"] > 0 and not any(n.get("Resources", {}).get("GPU", 0) for n in nodes) \
            and not any(t.resources.get("GPU", 0) for t in node_types or []):
        fix = ("set resources.gpu: 0 to train on CPU, or join a cluster with GPU nodes "
               "(--address)")
    elif cfg.resources.accelerator_type:
        fix = ("set resources.accelerator_type to one the cluster has, remove it, or add a "
               "node type with it to the cluster config")
    else:
        fix = ("lower resources.cpu / resources.gpu / resources.memory_gb to what one node "
               "(type) has")
    return [f"resources ({asked} per trial): no node of the Ray cluster can run a trial, and "
            f"its autoscaler cannot add one ({have}), so the sweep would wait forever. "
            f"Fix: {fix}."], []


def max_concurrent(cfg: SweepConfig, *, nodes: list[dict] | None = None,
                   node_types: list[NodeType] | None = None) -> int:
    """How many trials the cluster can run at once, counting the nodes its autoscaler can add
    (the default of search.max_concurrent)."""
    if cfg.search.max_concurrent:
        return cfg.search.max_concurrent
    nodes = alive_nodes() if nodes is None else nodes
    node_types = autoscaler_node_types() if node_types is None else node_types
    request = trial_request(cfg)
    counted = {k: v for k, v in request.items()
               if v > 0 and not k.startswith("accelerator_type:")}

    def per_node(resources: dict[str, float]) -> int:
        if not _fits(resources, request):
            return 0
        # in Ray's integer units: 1 // 0.2 is 4.0 in floats, and 8 // 0.1 is 79.0
        return min(fits(resources.get(k, 0), v) for k, v in counted.items())

    n = sum(per_node(node.get("Resources", {})) for node in nodes)
    for t in node_types or []:
        if t.max_workers < 0 and per_node(t.resources):
            return max(1, cfg.search.num_trials)  # no limit on how many the autoscaler adds
        if t.max_workers > 0:
            n += t.max_workers * per_node(t.resources)
    return max(1, n)


def can_grow(node_types: list[NodeType] | None) -> bool:
    return any(t.max_workers != 0 for t in node_types or [])


def check_shared_storage(cfg: SweepConfig, storage_path: str, *,
                         nodes: list[dict] | None = None,
                         node_types: list[NodeType] | None = None) -> list[str]:
    """A local ``storage.path`` on a cluster of several nodes must be a shared file system
    that every alive node sees (a file written here is read on each node)."""
    nodes = alive_nodes() if nodes is None else nodes
    node_types = autoscaler_node_types() if node_types is None else node_types
    if "://" in storage_path or (len(nodes) <= 1 and not can_grow(node_types)):
        return []
    size = f"{len(nodes)} nodes" + (" and an autoscaler that adds more"
                                    if can_grow(node_types) else "")
    if not cfg.storage.shared:
        return [f"storage.path = {cfg.storage.path!r}: a local path, on a Ray cluster of {size}. "
                f"Trials on other nodes would write their results and checkpoints to their own "
                f"disks, and a lost node would take them with it. Fix: put storage.path on a "
                f"shared file system mounted at the same path on every node (NFS, EFS, "
                f"Lustre...) and set storage.shared: true."]
    return _unseen_by(nodes, Path(storage_path))


def _unseen_by(nodes: list[dict], storage: Path) -> list[str]:
    """Write a probe file into ``storage`` and read it back on every node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    storage.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    probe = storage / f".qlora-sweep-probe-{token}"
    probe.write_text(token)

    def sees(path: str, expected: str) -> bool:
        try:
            with open(path) as f:
                return f.read() == expected
        except OSError:
            return False

    task = ray.remote(num_cpus=0)(sees)
    try:
        refs = {n["NodeManagerAddress"] + " (" + n["NodeID"][:8] + ")": task.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(str(probe), token) for n in nodes}
        seen = dict(zip(refs, ray.get(list(refs.values()), timeout=120)))
    finally:
        probe.unlink(missing_ok=True)
    missing = [node for node, ok in seen.items() if not ok]
    if not missing:
        return []
    return [f"storage.path = {str(storage)!r} with storage.shared: true, but node(s) "
            f"{', '.join(missing)} do not see a file written there by the driver: it is not "
            f"shared with them. Fix: mount the shared file system at {storage} on every node "
            f"(the NFS mount in cluster.yaml's initialization_commands and docker run_options, "
            f"a ReadWriteMany volume on KubeRay)."]


def check_cluster(cfg: SweepConfig, storage_path: str) -> None:
    """Trials fit a node (or one the autoscaler can add); storage is shared where it must be.

    Raises:
        UserError: with every problem found.
    """
    nodes, node_types = alive_nodes(), autoscaler_node_types()
    problems, notes = check_placement(cfg, nodes=nodes, node_types=node_types)
    problems += check_shared_storage(cfg, storage_path, nodes=nodes, node_types=node_types)
    if problems:
        raise UserError("the sweep cannot run on this Ray cluster", problems)
    for note in notes:
        log.info(note)
