"""The cluster configurations shipped for real clusters: ``cluster.yaml`` (Ray's cluster
launcher) and ``examples/kubernetes/`` (KubeRay), checked with Ray's own readers and
validation, and the sweep configs their commands run, checked with qlora-sweep's.

No cloud account is needed: Ray validates a launcher config, and translates a RayCluster into
its autoscaler's config, without talking to a provider.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.kuberay.autoscaling_config import (
    _derive_autoscaling_config_from_ray_cr,
)
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.util.accelerators import accelerators as acc

from orchestrator.config.loading import load_config
from orchestrator.config.preflight import check_data, data_sources

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = ROOT / "cluster.yaml"
KUBE = ROOT / "examples" / "kubernetes"
RAYJOB, RAYCLUSTER, PVC = KUBE / "rayjob.yaml", KUBE / "raycluster.yaml", KUBE / "pvc.yaml"
SHARED = "/mnt/shared"  # the shared file system, at the same path on every node
IMAGE_CHECKOUT = "/home/ray/qlora-sweep/"  # where the KubeRay image holds this repository

# GPU memory (GB) of the accelerator types Ray reports (ray.util.accelerators names). Ray names
# 40 and 80 GB A100s alike ("A100"), so a bare A100 counts as the smaller one.
ACCELERATOR_GB = {
    acc.NVIDIA_TESLA_T4: 16, acc.NVIDIA_TESLA_V100: 16, acc.NVIDIA_TESLA_A10G: 24,
    acc.NVIDIA_L4: 24, acc.NVIDIA_L40S: 48, acc.NVIDIA_A100: 40, acc.NVIDIA_A100_40G: 40,
    acc.NVIDIA_A100_80G: 80, acc.NVIDIA_H100: 80, acc.NVIDIA_H200: 141, acc.NVIDIA_B200: 180,
}

# Keys (as a path suffix) a user is expected to edit: each must carry an "EDIT" comment, on
# its line or in the comment lines right above it.
CLUSTER_EDITABLE = [("cluster_name",), ("max_workers",), ("min_workers",),
                    ("idle_timeout_minutes",), ("provider", "region"),
                    ("provider", "availability_zone"), ("provider", "cache_stopped_nodes"),
                    ("auth", "ssh_user"), ("docker", "image"), ("InstanceType",), ("ImageId",),
                    ("VolumeSize",), ("available_node_types", "*", "resources")]
KUBE_EDITABLE = [("metadata", "name"), ("rayVersion",), ("idleTimeoutSeconds",),
                 ("ttlSecondsAfterFinished",), ("containers", "image"), ("minReplicas",),
                 ("maxReplicas",), ("rayStartParams", "resources"), ("claimName",),
                 ("nodeSelector", "node.kubernetes.io/instance-type"), ("limits", "cpu"),
                 ("limits", "memory"), ("secretKeyRef", "name"), ("storageClassName",),
                 ("requests", "storage"), ("sizeLimit",)]


def _load(path: Path):
    return yaml.safe_load(path.read_text())


# --- helpers --------------------------------------------------------------------------------


def _accelerators(resources: dict) -> list[str]:
    return [k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:")]


def _gpu_types(node_types: dict, head: str) -> dict[str, int]:
    """``{worker type: GPU memory in GB}`` of the worker types that declare GPUs."""
    out = {}
    for name, spec in node_types.items():
        if name == head or not spec["resources"].get("GPU"):
            continue
        accels = _accelerators(spec["resources"])
        assert len(accels) == 1, f"{name}: declare exactly one accelerator_type, got {accels}"
        assert accels[0] in ACCELERATOR_GB, (
            f"{name}: accelerator_type:{accels[0]} is not a name Ray reports "
            f"({sorted(ACCELERATOR_GB)})")
        out[name] = ACCELERATOR_GB[accels[0]]
    return out


def _check_gpu_classes(node_types: dict, head: str) -> None:
    assert not node_types[head]["resources"].get("GPU"), "the head must have no GPU"
    assert not _accelerators(node_types[head]["resources"])
    gpu = _gpu_types(node_types, head)
    assert len(gpu) >= 2, f"at least two GPU worker types, got {sorted(gpu)}"
    assert any(24 <= gb < 80 for gb in gpu.values()), f"no 24 GB-class type: {gpu}"
    assert any(gb >= 80 for gb in gpu.values()), f"no 80 GB-class type: {gpu}"
    for name in gpu:
        spec = node_types[name]
        assert spec.get("min_workers", 0) <= spec["max_workers"], name
        assert spec["max_workers"] > 0, f"{name}: max_workers 0 can never add a node"


def _keys(node, path=()):
    """Every mapping key of a composed YAML node as ``(path, key node)``."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield path + (key.value,), key
            yield from _keys(value, path + (key.value,))
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _keys(item, path)


def _suffix_matches(path: tuple, pattern: tuple) -> bool:
    tail = path[-len(pattern):]
    return len(tail) == len(pattern) and all(p in ("*", t) for p, t in zip(pattern, tail))


def _comment_near(lines: list[str], index: int) -> str:
    """The comment on line ``index`` and the comment-only lines right above it."""
    found = []
    inline = re.search(r"\s#(.*)$", lines[index])
    if inline:
        found.append(inline.group(1))
    i = index - 1
    while i >= 0 and lines[i].lstrip().startswith("#"):
        found.append(lines[i])
        i -= 1
    return "\n".join(found)


def _uncommented(path: Path, editable: list[tuple]) -> list[str]:
    """Editable keys of ``path`` without an EDIT comment (on the line or right above)."""
    text = path.read_text()
    lines = text.splitlines()
    missing, seen = [], 0
    for doc in yaml.compose_all(text):
        for key_path, key in _keys(doc):
            if any(_suffix_matches(key_path, p) for p in editable):
                seen += 1
                if "EDIT" not in _comment_near(lines, key.start_mark.line):
                    missing.append(f"{path.name}:{key.start_mark.line + 1}: {'.'.join(key_path)}")
    assert seen, f"{path.name}: none of the editable keys found"
    return missing


def _run_commands(text: str) -> list[list[str]]:
    """Every ``qlora-sweep run CONFIG [key=value ...]`` in ``text`` (comments and shell line
    continuations included), as argument lists from CONFIG on."""
    text = re.sub(r"\\\s*\n\s*#?\s*", " ", text)
    out = []
    for match in re.finditer(r"qlora-sweep run ([^\n`'\"]+)", text):
        args = shlex.split(match.group(1).split("#")[0])
        overrides = [a for a in args[1:] if "=" in a and not a.startswith("-")]
        out.append([args[0], *overrides])
    return out


def _repo_path(config: str) -> Path:
    return ROOT / config.removeprefix(IMAGE_CHECKOUT)


# --- cluster.yaml (Ray's cluster launcher) -------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> dict:
    """cluster.yaml as `ray up` resolves it: merged with the provider's defaults, validated."""
    config = prepare_config(copy.deepcopy(_load(CLUSTER_YAML)))
    validate_config(config)
    return config


def test_cluster_yaml_passes_rays_validation(cluster):
    assert cluster["provider"]["type"] == "aws"
    assert cluster["head_node_type"] in cluster["available_node_types"]


def test_rays_validation_is_strict_about_what_we_rely_on(cluster):
    """The validation above can fail: a misspelled key and a fractional resource are refused."""
    typo = copy.deepcopy(cluster)
    typo["available_node_types"]["gpu-24gb"]["max_worker"] = 4
    with pytest.raises(jsonschema.ValidationError):
        validate_config(typo)
    fractional = copy.deepcopy(cluster)
    fractional["available_node_types"]["gpu-24gb"]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        validate_config(fractional)


def test_cluster_yaml_node_types(cluster):
    raw = _load(CLUSTER_YAML)
    types = raw["available_node_types"]
    for name, spec in types.items():
        # Declared, not left to AWS autodetection: the autoscaler needs the accelerator type
        # before any node exists, and the sweep's pre-flight reads these from the head.
        assert {"CPU", "GPU"} <= set(spec["resources"]), f"{name}: declare CPU and GPU"
    _check_gpu_classes(types, raw["head_node_type"])
    workers = [s for n, s in types.items() if n != raw["head_node_type"]]
    assert sum(s.get("min_workers", 0) for s in workers) <= raw["max_workers"]
    assert raw["max_workers"] >= max(s["max_workers"] for s in workers)
    assert raw["idle_timeout_minutes"] > 0
    # The head never runs workers; Ray's resolution sets that.
    assert cluster["available_node_types"][raw["head_node_type"]]["max_workers"] == 0


def test_cluster_yaml_installs_the_checkout_and_mounts_the_shared_fs():
    raw = _load(CLUSTER_YAML)
    assert ray.__version__ in raw["docker"]["image"], "the image's Ray must be the local Ray"
    assert raw["docker"]["image"].endswith("-gpu")
    remote = [r for r, local in raw["file_mounts"].items() if Path(local) == Path(".")]
    assert remote, "file_mounts ships the checkout (run `ray up` from the repository root)"
    commands = raw["setup_commands"] + raw.get("worker_setup_commands", [])
    assert any(re.search(rf"pip install (-e )?{re.escape(remote[0])}", c) for c in commands)
    every = commands + raw["initialization_commands"] + raw.get("head_setup_commands", [])
    assert not any("torch==" in c for c in every), "GPU nodes need pip's default (CUDA) torch"
    assert f"-v {SHARED}:{SHARED}" in raw["docker"]["run_options"]
    assert any(re.search(rf"mount .* {SHARED}\b", c) for c in raw["initialization_commands"])
    assert ".venv" in raw["rsync_exclude"]


def test_cluster_yaml_editable_values_are_commented():
    assert _uncommented(CLUSTER_YAML, CLUSTER_EDITABLE) == []
    lines = CLUSTER_YAML.read_text().splitlines()
    placeholders = [i for i, line in enumerate(lines)
                    if re.search(r"fs-X{8}|ami-X+|ssh_private_key", line)]
    assert len(placeholders) >= 5  # the file system id, an AMI per node type, the ssh key
    for i in placeholders:
        # A placeholder inside a folded command has its EDIT note above the list item.
        item = i
        while "EDIT" not in lines[item] and not lines[item].lstrip().startswith("- ") and item:
            item -= 1
        assert "EDIT" in lines[item] + _comment_near(lines, item), f"cluster.yaml:{i + 1}"


# --- KubeRay manifests ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return _load(RAYJOB)


@pytest.fixture(scope="module")
def raycluster() -> dict:
    return _load(RAYCLUSTER)


def _cluster_specs(rayjob, raycluster):
    return [("rayjob.yaml", rayjob["spec"]["rayClusterSpec"]),
            ("raycluster.yaml", raycluster["spec"])]


def test_kuberay_objects(rayjob, raycluster):
    for obj, kind in ((rayjob, "RayJob"), (raycluster, "RayCluster")):
        assert obj["apiVersion"] == "ray.io/v1"
        assert obj["kind"] == kind
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"])
    pvc = _load(PVC)
    assert (pvc["apiVersion"], pvc["kind"]) == ("v1", "PersistentVolumeClaim")
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]


@pytest.mark.parametrize("which", ["rayjob.yaml", "raycluster.yaml"])
def test_kuberay_cluster_spec(which, rayjob, raycluster):
    spec = dict(_cluster_specs(rayjob, raycluster))[which]
    assert spec["rayVersion"] == ray.__version__
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    groups = [("head", spec["headGroupSpec"])] + [
        (g.get("groupName"), g) for g in spec["workerGroupSpecs"]]
    images = set()
    for name, group in groups:
        params = group["rayStartParams"]
        assert isinstance(params, dict)
        assert all(isinstance(v, str) for v in params.values()), f"{name}: strings only"
        container = group["template"]["spec"]["containers"][0]
        assert container["name"] and container["image"], name
        images.add(container["image"])
    assert len(images) == 1, f"head and workers must run the same image: {images}"
    head_limits = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in head_limits.get("limits", {})
    names = [g["groupName"] for g in spec["workerGroupSpecs"]]
    assert len(set(names)) == len(names)
    for group in spec["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        res = group["template"]["spec"]["containers"][0]["resources"]
        if "gpu" in group["groupName"] or "accelerator_type" in group["rayStartParams"].get(
                "resources", ""):
            assert int(res["limits"]["nvidia.com/gpu"]) >= 1, group["groupName"]


@pytest.mark.parametrize("which", ["rayjob.yaml", "raycluster.yaml"])
def test_kuberay_cluster_as_rays_autoscaler_reads_it(which, rayjob, raycluster):
    """Ray's own translation of the RayCluster into its autoscaler config (what the in-tree
    autoscaler scales on), validated by Ray; then the same node-type checks as cluster.yaml."""
    spec = dict(_cluster_specs(rayjob, raycluster))[which]
    config = _derive_autoscaling_config_from_ray_cr(
        {"metadata": {"name": "qlora-sweep", "namespace": "default"}, "spec": spec})
    _check_gpu_classes(config["available_node_types"], config["head_node_type"])
    assert config["available_node_types"][config["head_node_type"]]["resources"]["CPU"] == 0


def test_rayjob_and_raycluster_describe_the_same_cluster(rayjob, raycluster):
    assert rayjob["spec"]["rayClusterSpec"] == raycluster["spec"]


@pytest.mark.parametrize("which", ["rayjob.yaml", "raycluster.yaml"])
def test_kuberay_shared_volume_in_every_pod(which, rayjob, raycluster):
    spec = dict(_cluster_specs(rayjob, raycluster))[which]
    claim = _load(PVC)["metadata"]["name"]
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    for pod in pods:
        volumes = [v["name"] for v in pod["volumes"]
                   if v.get("persistentVolumeClaim", {}).get("claimName") == claim]
        assert len(volumes) == 1, f"the PVC {claim} is a volume of every pod"
        mounts = [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]
                  if m["name"] == volumes[0]]
        assert mounts == [SHARED], f"mounted at {SHARED} in every pod, got {mounts}"


def test_rayjob_runs_a_sweep_and_cleans_up(rayjob):
    spec = rayjob["spec"]
    args = shlex.split(spec["entrypoint"])
    assert args[:2] == ["qlora-sweep", "run"]
    overrides = dict(a.split("=", 1) for a in args[3:])
    assert overrides["storage.path"].startswith(SHARED + "/")
    assert overrides["storage.shared"] == "true"
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0


@pytest.mark.parametrize("path", [RAYJOB, RAYCLUSTER, PVC], ids=lambda p: p.name)
def test_kuberay_editable_values_are_commented(path):
    assert _uncommented(path, KUBE_EDITABLE) == []


# --- the sweeps these files run ----------------------------------------------------------------


def _cluster_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in (CLUSTER_YAML, RAYCLUSTER):
        found += [(path.name, c) for c in _run_commands(path.read_text())]
    found += [("rayjob.yaml", shlex.split(_load(RAYJOB)["spec"]["entrypoint"])[2:])]
    return found


def test_every_file_names_a_sweep():
    assert {name for name, _ in _cluster_commands()} == {
        "cluster.yaml", "raycluster.yaml", "rayjob.yaml"}


@pytest.mark.parametrize(("where", "command"), _cluster_commands(),
                         ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_cluster_sweep_configs_validate(where, command):
    """The configs the cluster files run exist, validate with their overrides, put the sweep
    dir on the shared file system, load their data, and fit a GPU worker type."""
    config, overrides = _repo_path(command[0]), command[1:]
    assert config.is_file(), f"{where}: {command[0]} does not exist"
    cfg, derived = load_config(config, overrides)
    assert cfg.storage.shared is True and cfg.storage.path.startswith(SHARED + "/")
    fmt, problems, _ = check_data(data_sources(cfg, derived))
    assert problems == [] and fmt
    assert cfg.resources.gpu > 0, f"{where}: the cluster's workers are GPU nodes"
    accel = cfg.resources.accelerator_type
    types = _node_types(where)
    # The worker types whose GPUs can take this sweep's trials...
    gpu_types = {n: t["resources"] for n, t in types.items() if t.get("max_workers", 0) > 0
                 and t["resources"].get("GPU", 0) >= cfg.resources.gpu
                 and (not accel or t["resources"].get(f"accelerator_type:{accel}"))}
    assert gpu_types, f"{where}: no worker type has the GPUs one trial of {command[0]} asks for"
    for name, res in gpu_types.items():
        # ...have the CPUs for a trial on each GPU, or the GPUs would sit idle (or, with
        # fewer CPUs than one trial asks for, the trials would never be placed).
        trials = res["GPU"] // cfg.resources.gpu
        assert trials * cfg.resources.cpu <= res["CPU"], (
            f"{where}: {name} has {res['CPU']} CPUs for {trials:g} trials of "
            f"{cfg.resources.cpu:g} CPUs each ({command[0]})")


def _node_types(where: str) -> dict:
    """The worker types of the cluster a command runs on, as Ray's autoscaler sees them."""
    if where == "cluster.yaml":
        return _load(CLUSTER_YAML)["available_node_types"]
    spec = _load(RAYCLUSTER)["spec"] if where == "raycluster.yaml" else \
        _load(RAYJOB)["spec"]["rayClusterSpec"]
    return _derive_autoscaling_config_from_ray_cr(
        {"metadata": {"name": "qlora-sweep", "namespace": "default"}, "spec": spec}
    )["available_node_types"]


def test_readme_example_commands_name_configs_that_validate():
    """Commands in the README and the docs that run a shipped example (examples/...) name a
    config that exists and validates with their overrides."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    commands = [c for page in pages for c in _run_commands(page.read_text())
                if c[0].startswith("examples/")]
    assert commands
    for config, *overrides in commands:
        assert (ROOT / config).is_file(), config
        load_config(ROOT / config, overrides)
