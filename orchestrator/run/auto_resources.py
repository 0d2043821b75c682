"""``resources.gpu: auto``: how many trials share a GPU, from an estimate of their memory.

The estimate (``trainables/memory_estimate.py``) is taken for the most demanding trial the
search space allows: every combination of the searched settings that move memory (rank,
target modules, DoRA, dropout, batch sizes, gradient checkpointing, optimizer), each at its
largest choice or bound. A GPU of M bytes then holds ``M // (estimate + margin + CUDA
context)`` trials, and each trial asks Ray for that share of a GPU, floored to Ray's units
(``resource_units.py``) so that Ray places as many as planned. A cluster may mix GPU types
(``cluster.yaml``: 24 GB A10G and 80 GB H100 workers), and a trial lands on any GPU that has its
share free: the memory is read on one GPU of each type a trial can land on, and the share is
sized on the smallest (``resources.accelerator_type`` pins trials to one type, and the share is
sized on it). With no GPU in the
cluster, trials run on CPU: as many per node as its cores allow (``resources.cpu`` each), and
each reserves its estimated RAM (Ray's ``memory`` resource), so no node takes more than its
memory holds.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any

from trainables.spec import TrialSpec

from ..config.plan import SweepPlan
from ..config.schema import SweepConfig
from ..errors import UserError
from .resource_units import fits, share_per_gpu

log = logging.getLogger(__name__)


GiB = 2**30
# Keys of the search space that change a trial's memory.
MEMORY_KEYS = ("lora.r", "lora.target_modules", "lora.use_dora", "lora.dropout",
               "training.per_device_train_batch_size", "training.per_device_eval_batch_size",
               "training.gradient_checkpointing", "training.optim")
# A CPU trial's process (Python, torch, Ray worker) before it loads anything: an allowance,
# not a measured figure.
CPU_PROCESS_BYTES = 1 * GiB
GPU_PROBE_TIMEOUT_S = 300
ACCELERATOR_PREFIX = "accelerator_type:"  # Ray's resource on a node with that accelerator


def largest_trial(spec: TrialSpec, derived: SweepPlan, *, on_gpu: bool,
                  exhaustive_limit: int = 4096):
    """``(estimate, searched values)`` of the search space's most memory-hungry trial.

    Every combination of the memory-relevant candidates when there are at most
    ``exhaustive_limit``; beyond that, one setting at a time (each to its hungriest candidate
    with the others held, until nothing changes), once for the training step's peak and once
    for the evaluation's: each grows with every one of these settings whatever the others
    are, so that finds the largest without the combinatorial count.
    """
    from trainables.memory_estimate import estimate, model_shape

    shape = model_shape(spec.model)
    candidates = {k: d.candidates() for k, d in derived.domains.items() if k in MEMORY_KEYS}

    def sized(searched: dict[str, Any]):
        return estimate(shape, spec.for_trial(searched), on_gpu=on_gpu), searched

    if math.prod(len(v) for v in candidates.values()) <= exhaustive_limit:
        return max((sized(dict(zip(candidates, values)))
                    for values in itertools.product(*candidates.values())),
                   key=lambda pair: pair[0].total)

    def one_at_a_time(peak: str):
        best = sized({k: v[0] for k, v in candidates.items()})
        for _ in range(len(candidates) + 1):
            before = best[1]
            for key, values in candidates.items():
                best = max((sized({**best[1], key: value}) for value in values),
                           key=lambda pair: getattr(pair[0], peak))
            if best[1] == before:
                break
        return best

    return max((one_at_a_time(peak) for peak in ("train_peak", "eval_peak")),
               key=lambda pair: pair[0].total)


def gpu_types(accelerator_type: str | None, *, nodes: list[dict] | None = None,
              node_types: list | None = None) -> list[str | None]:
    """The GPU types a trial can land on: ``resources.accelerator_type`` when it is set, else
    every type of the alive GPU nodes and of the GPU node types the autoscaler can add (Ray
    gives a node with GPUs a resource ``accelerator_type:<type>``, e.g. ``A10G``; ``None``
    stands for GPUs of no declared type). Empty: the pinned type is nowhere in the cluster.
    """
    from .cluster import alive_nodes, autoscaler_node_types

    nodes = alive_nodes() if nodes is None else nodes
    node_types = autoscaler_node_types() if node_types is None else node_types
    pools = ([n.get("Resources", {}) for n in nodes]
             + [t.resources for t in node_types or [] if t.max_workers != 0])
    found: list[str | None] = []
    for resources in pools:
        if not resources.get("GPU", 0):
            continue
        named = [k.split(":", 1)[1] for k in resources if k.startswith(ACCELERATOR_PREFIX)]
        for kind in named or [None]:
            if kind not in found:
                found.append(kind)
    if accelerator_type:
        return [accelerator_type] if accelerator_type in found else []
    return sorted(found, key=lambda k: (k is None, k or ""))


def gpu_memory_by_type(kinds: list[str | None], *,
                       timeout: float = GPU_PROBE_TIMEOUT_S) -> dict[str | None, int]:
    """Total memory of one GPU of each type, read on a GPU worker of that type (pinned with
    its ``accelerator_type`` resource; an untyped GPU's probe goes to any GPU). A type that
    has no alive node makes the autoscaler add one, as a trial would.

    Raises:
        UserError: a type's probe found no GPU worker within ``timeout``.
    """
    import ray

    def total_memory() -> int:
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)

    probe = ray.remote(num_gpus=1, num_cpus=0)(total_memory)
    refs = {kind: probe.options(resources={f"{ACCELERATOR_PREFIX}{kind}": 0.001} if kind
                                else {}).remote() for kind in kinds}
    ready, pending = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
    for ref in pending:
        ray.cancel(ref, force=True)
    missing = [_name(k) for k, ref in refs.items() if ref not in ready]
    if missing:
        answered = [k for k, ref in refs.items() if ref in ready and k]
        pin = (f"set resources.accelerator_type to a type that answered "
               f"({', '.join(answered)}), or " if answered else "")
        raise UserError(f"resources.gpu = auto: no GPU worker of {', '.join(missing)} answered "
                        f"within {timeout:.0f} s, so its memory is unknown. Fix: {pin}set "
                        f"resources.gpu to a number (1, or 0.5 to put two trials on a GPU).")
    memory = {}
    for kind, ref in refs.items():
        try:
            memory[kind] = ray.get(ref)
        except ray.exceptions.RayTaskError as err:  # e.g. a torch without CUDA on that node
            cause = str(err.cause if getattr(err, "cause", None) else err).strip()
            raise UserError(f"resources.gpu = auto: reading the memory of a GPU of "
                            f"{_name(kind)} failed on its worker ({cause.splitlines()[-1]}). "
                            f"Fix: check that torch sees the GPU there (a CUDA build of torch "
                            f"on that node), or set resources.gpu to a number (1, or 0.5 to "
                            f"put two trials on a GPU).") from None
    return memory


def _name(kind: str | None) -> str:
    return kind or "GPUs of no declared type"


def gpu_share(need: int, memory: dict[str | None, int], *, largest: str = "a trial needs",
              pinned: bool = False) -> tuple[float, str]:
    """``(share of a GPU per trial, what was decided)``: sized on the smallest GPU of
    ``memory`` (type -> bytes), where a trial of ``need`` bytes (the estimate) may land, and
    floored to Ray's units so that exactly as many trials as fit are placed on a GPU.

    Raises:
        UserError: not even one trial fits the smallest GPU.
    """
    from trainables.memory_estimate import trials_per_gpu

    per_type = {kind: trials_per_gpu(need, size) for kind, size in memory.items()}
    smallest = min(memory, key=lambda k: memory[k])
    per_gpu = per_type[smallest]
    each = ", ".join(f"{_name(k)} {memory[k] / GiB:.1f} GiB holds {per_type[k]}"
                     for k in sorted(memory, key=lambda k: memory[k]))
    larger = sorted((k for k in per_type if k and per_type[k] > per_gpu),
                    key=lambda k: per_type[k])
    if per_gpu == 0:
        fix = (f"set resources.accelerator_type: {larger[-1]} (a trial fits its GPUs), or turn "
               if larger and not pinned else "turn ")
        raise UserError(
            f"resources.gpu = auto: {largest}, more than the smallest GPU a trial can land on "
            f"holds with the CUDA context ({each}). Fix: {fix}on "
            f"training.gradient_checkpointing, or lower training.per_device_train_batch_size "
            f"(with gradient_accumulation_steps to keep the batch), data.max_length or lora.r; "
            f"or set resources.gpu: 1 to try anyway.")
    share = share_per_gpu(per_gpu)
    placed = fits(1.0, share)
    told = f"{each}; each trial takes {share:g} GPU ({placed} per GPU)"
    if len(memory) > 1:
        told += (f", sized on the smallest ({_name(smallest)}), where a trial may land"
                 + (f"; resources.accelerator_type: {larger[-1]} would pack "
                    f"{per_type[larger[-1]]} per GPU there" if larger else ""))
    return share, told


def cluster_has_gpus() -> bool:
    from .cluster import alive_nodes, autoscaler_node_types

    return (any(n.get("Resources", {}).get("GPU", 0) for n in alive_nodes())
            or any(t.resources.get("GPU", 0) and t.max_workers != 0
                   for t in autoscaler_node_types() or []))


def resolve_auto(cfg: SweepConfig, derived: SweepPlan, spec: TrialSpec, *,
                 has_gpus: bool | None = None,
                 gpu_memory: dict[str | None, int] | None = None) -> SweepConfig:
    """``cfg`` with ``resources.gpu: auto`` replaced by the share of a GPU a trial takes (or
    0 and a RAM reservation on CPU). Any other ``cfg`` is returned as it is.
    ``gpu_memory``: each GPU type a trial can land on -> its memory in bytes (default: probed
    on the cluster, :func:`gpu_memory_by_type`); the share fits the smallest.

    Raises:
        UserError: not even one trial fits the smallest GPU, the pinned type is nowhere, or
            no GPU worker of a type answered.
    """
    if cfg.resources.gpu != "auto":
        return cfg
    has_gpus = cluster_has_gpus() if has_gpus is None else has_gpus
    est, searched = largest_trial(spec, derived, on_gpu=has_gpus)
    which = (" (" + ", ".join(f"{k}={v}" for k, v in searched.items()) + ")") if searched else ""
    update: dict[str, Any]
    if not has_gpus:
        need = est.total + CPU_PROCESS_BYTES
        update = {"gpu": 0.0, "memory_gb": cfg.resources.memory_gb or round(need / GiB, 2)}
        log.info(f"resources.gpu = auto: no GPU in the cluster, so trials run on CPU, "
                 f"{cfg.resources.cpu:g} core(s) each; the largest trial{which} needs about "
                 f"{est.describe()}, {update['memory_gb']:.2f} GiB of RAM reserved per trial")
        return cfg.model_copy(update={"resources": cfg.resources.model_copy(update=update)})

    if gpu_memory is None:
        kinds = gpu_types(cfg.resources.accelerator_type)
        if not kinds:
            raise UserError(
                f"resources.accelerator_type = {cfg.resources.accelerator_type!r}: no GPU node "
                f"of the Ray cluster has it, and its autoscaler cannot add one, so no trial "
                f"could run. Fix: set it to a type the cluster has "
                f"({', '.join(k for k in gpu_types(None) if k) or 'none declared'}), or "
                f"remove it.")
        gpu_memory = gpu_memory_by_type(kinds)
    largest = f"the largest trial{which} needs about {est.describe()}"
    share, told = gpu_share(est.total, gpu_memory, largest=largest,
                            pinned=bool(cfg.resources.accelerator_type))
    log.info(f"resources.gpu = auto: {largest}; {told}")
    update = {"gpu": share}
    return cfg.model_copy(update={"resources": cfg.resources.model_copy(update=update)})

