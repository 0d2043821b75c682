"""``resources.gpu: auto``: how many trials share a GPU, from an estimate of their memory.

The estimate (``trainables/memory_estimate.py``) is taken for the most demanding trial the
search space allows: every combination of the searched settings that move memory (rank,
target modules, DoRA, dropout, batch sizes, gradient checkpointing, optimizer), each at its
largest choice or bound. A GPU of M bytes then holds ``M // (estimate + margin + CUDA
context)`` trials, and each trial asks Ray for that share of a GPU. With no GPU in the
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


def gpu_memory_bytes(timeout: float = GPU_PROBE_TIMEOUT_S) -> int:
    """Total memory of a GPU of the cluster, read on a GPU worker."""
    import ray

    def total_memory() -> int:
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)

    ref = ray.remote(num_gpus=1, num_cpus=0)(total_memory).remote()
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        raise UserError(f"resources.gpu = auto: no GPU worker answered within {timeout:.0f} s, "
                        f"so the GPU's memory is unknown. Fix: set resources.gpu to a number "
                        f"(1, or 0.5 to put two trials on a GPU).") from None


def cluster_has_gpus() -> bool:
    from .cluster import alive_nodes, autoscaler_node_types

    return (any(n.get("Resources", {}).get("GPU", 0) for n in alive_nodes())
            or any(t.resources.get("GPU", 0) and t.max_workers != 0
                   for t in autoscaler_node_types() or []))


def resolve_auto(cfg: SweepConfig, derived: SweepPlan, spec: TrialSpec, *,
                 has_gpus: bool | None = None, gpu_bytes: int | None = None) -> SweepConfig:
    """``cfg`` with ``resources.gpu: auto`` replaced by the share of a GPU a trial takes (or
    0 and a RAM reservation on CPU). Any other ``cfg`` is returned as it is.

    Raises:
        UserError: not even one trial fits the GPU, or no GPU worker answered.
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

    from trainables.memory_estimate import trials_per_gpu

    gpu_bytes = gpu_memory_bytes() if gpu_bytes is None else gpu_bytes
    per_gpu = trials_per_gpu(est.total, gpu_bytes)
    if per_gpu == 0:
        raise UserError(
            f"resources.gpu = auto: the largest trial{which} needs about {est.describe()}, more "
            f"than the GPU's {gpu_bytes / GiB:.1f} GiB holds with the CUDA context. Fix: turn "
            f"on training.gradient_checkpointing, or lower training.per_device_train_batch_size "
            f"(with gradient_accumulation_steps to keep the batch), data.max_length or lora.r; "
            f"or set resources.gpu: 1 to try anyway.")
    share = round(1 / per_gpu, 4)
    log.info(f"resources.gpu = auto: the largest trial{which} needs about {est.describe()}; a GPU "
             f"of {gpu_bytes / GiB:.1f} GiB holds {per_gpu}, so each trial takes {share:g} GPU")
    update = {"gpu": share}
    return cfg.model_copy(update={"resources": cfg.resources.model_copy(update=update)})
