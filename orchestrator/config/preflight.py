"""Pre-flight checks, cheap and before any trial: data, model and target groups, resources.

Each check returns problems rather than raising, so the user sees every one in one report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from search_spaces.targets import TargetError, resolve_groups, resolve_target
from trainables.spec import TrialSpec

from .data_fit import DataFit, check_data_fit
from .plan import SweepPlan
from .schema import SweepConfig, looks_like_a_path
from ..errors import UserError


def data_sources(cfg: SweepConfig, derived: SweepPlan) -> dict[str, Any]:
    """The resolved data settings the trials receive (absolute local paths)."""

    def source(src, local_path):
        if src is None:
            return None
        return {"path": local_path or src.path, "split": src.split, "subset": src.subset,
                "local": local_path is not None, "columns": dict(cfg.data.columns)}

    return {
        "train": source(cfg.data.train, derived.train_path),
        "eval": source(cfg.data.eval, derived.eval_path),
        "format": cfg.data.format,
        "eval_fraction": cfg.data.eval_fraction,
        "max_length": cfg.data.max_length,
        "max_eval_samples": cfg.data.max_eval_samples,
        "packing": cfg.data.packing,
    }


def check_data(data: dict[str, Any]) -> tuple[str | None, list[str], str]:
    """Load each source once: it exists, is non-empty, its format is recognised, and every
    row can be trained on. Returns ``(format, problems, suffix)``: the suffix is the trailing
    whitespace every training prompt ends with (part of the prompt format)."""
    from trainables.data import DataError, check_rows, detect_format, load_source
    from trainables.generate import prompt_suffix

    problems: list[str] = []
    fmt, suffix = None, ""
    for key in ("train", "eval"):
        src = data[key]
        if src is None:
            continue
        try:
            ds = load_source(src)
            found = detect_format(ds.column_names, fmt or data["format"], where=src["path"])
            fmt = fmt or found
            check_rows(ds, found, where=src["path"])
            if key == "train" and found == "prompt_completion":
                suffix = prompt_suffix(list(ds["prompt"]))
        except DataError as err:
            problems.append(f"data.{key}: {err}")
    return fmt, problems, suffix


def target_candidates(cfg: SweepConfig, derived: SweepPlan) -> list[str | list[str]]:
    """Every ``lora.target_modules`` value a trial may use: the fixed one and each choice."""
    values: list = [cfg.lora.target_modules]
    dom = derived.domains.get("lora.target_modules")
    if dom is not None:
        values += list(dom.meta.get("raw", dom.values))
    return values


def check_model(cfg: SweepConfig, derived: SweepPlan) -> tuple[dict[str, list[str]], list[str]]:
    """Resolve the target-module groups from the model's config (meta device, no weights).

    Returns:
        ``(target_groups, problems)``: each candidate's name (group, or ``a+b`` for a list)
        mapped to the PEFT target suffixes it selects in this model.
    """
    from trainables.model import linear_module_names

    model = cfg.model.model_dump()
    name = cfg.model.name_or_path
    if looks_like_a_path(name) and not Path(name).expanduser().exists():
        return {}, [f"model.name_or_path = {name!r}: no such folder (a path, not a Hub id). Fix: "
                    f"give the folder of a local model (the one holding config.json), or a Hub "
                    f"id such as 'Qwen/Qwen2.5-0.5B-Instruct'."]
    try:
        names = linear_module_names(model)
    except Exception as err:  # transformers raises OSError/ValueError/KeyError for bad models
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return {}, [f"model.name_or_path = {cfg.model.name_or_path!r}: its config could not be "
                    f"loaded as a causal LM ({first}). Fix: give a Hub id or a local folder with "
                    f"config.json of a causal language model, or builtin:tiny-llama."]
    groups = resolve_groups(names)
    resolved: dict[str, list[str]] = {}
    problems = []
    for value in target_candidates(cfg, derived):
        key = "+".join(value) if isinstance(value, list) else value
        try:
            resolved[key] = resolve_target(value, names, groups)
        except TargetError as err:
            where = ("lora.target_modules" if value is cfg.lora.target_modules
                     else "search_space.lora.target_modules")
            problems.append(f"{where} = {value!r}: {err}")
    return resolved, problems


def check_storage(path: str) -> list[str]:
    """A local ``storage.path`` can hold sweep dirs: the nearest existing folder on the way is
    a folder and a file can be written in it (tried with a temporary file, then removed)."""
    import tempfile

    from trainables.storage import is_uri

    if is_uri(path):
        return _check_cloud_storage(path)
    target = Path(path).expanduser().resolve()
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return [f"storage.path = {path!r}: {existing} is a file, so no folder can be made "
                f"there. Fix: point storage.path at a folder (or a path that does not exist)."]
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        return [f"storage.path = {path!r}: cannot write in {existing} ({err.strerror or err}). "
                f"Fix: choose a folder you can write to, or fix its permissions."]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [f"storage.path = {path!r}: {existing} is not writable. Fix: choose a folder "
                f"you can write to, or fix its permissions."]
    return []


def _check_cloud_storage(uri: str) -> list[str]:
    """A cloud ``storage.path`` can be written, read and deleted in from here, as every node
    will (a probe object, removed at once). Credentials come from the environment."""
    import uuid

    from trainables.storage import join, read_text, resolve, write_text

    probe = join(uri, f".qlora-sweep-probe-{uuid.uuid4().hex[:8]}")
    try:
        write_text(probe, "probe")
        ok = read_text(probe) == "probe"
        fs, path = resolve(probe)
        fs.delete_file(path)
    except (OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        return [f"storage.path = {uri!r}: cannot write there from this machine ({first}). "
                f"Fix: check the bucket name and this machine's credentials (for S3: "
                f"AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_REGION, and "
                f"AWS_ENDPOINT_URL for an S3-compatible store; for GCS: "
                f"GOOGLE_APPLICATION_CREDENTIALS); every Ray node needs the same access."]
    if not ok:
        return [f"storage.path = {uri!r}: a file written there read back differently. Fix: "
                f"use a storage that reads back what was written."]
    return []


def check_chat_template(model: dict[str, Any], fmt: str | None) -> list[str]:
    """A ``messages`` dataset is rendered with the tokenizer's chat template: it must have one.
    (The builtin tiny Llama has one.)"""
    from trainables import tiny_llama

    if fmt != "messages" or tiny_llama.is_builtin(model["name_or_path"]):
        return []
    from trainables.model import load_tokenizer

    try:
        tokenizer = load_tokenizer(model)
    except Exception:  # the model check reports an unreadable model; say it once
        return []
    if tokenizer.chat_template:
        return []
    return [f"data.format = messages, but the tokenizer of {model['name_or_path']} has no chat "
            f"template to render them. Fix: use the model's chat/instruct variant, or write "
            f"the data as prompt/completion (or instruction/output) rows."]


def local_gpus() -> int:
    """The NVIDIA GPUs of this machine, as Ray would count them (``CUDA_VISIBLE_DEVICES``
    narrows them), without importing torch."""
    import os
    import shutil
    import subprocess

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir():
        count = len(list(gpus.iterdir()))
    elif shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
            count = sum(line.startswith("GPU ") for line in out.stdout.splitlines())
        except (OSError, subprocess.SubprocessError):
            count = 0
    else:
        count = 0
    if visible is not None:
        count = min(count, len([d for d in visible.split(",") if d.strip()]))
    return count


def require_local_fit(cfg: SweepConfig, derived: SweepPlan, address: str | None) -> None:
    """For a local sweep (no ``address``, no ``RAY_ADDRESS``): raise unless one trial's
    request fits this machine (:func:`check_local_resources`).

    Raises:
        UserError: with every resource that cannot fit.
    """
    import os

    if address or os.environ.get("RAY_ADDRESS"):
        return  # a cluster: run checks the request against its nodes once Ray is up
    problems = check_local_resources(cfg)
    if problems:
        raise UserError("the sweep cannot run on this machine", derived.locate(problems))


def check_local_resources(cfg: SweepConfig) -> list[str]:
    """A local sweep (no ``--address``, no ``RAY_ADDRESS``) runs on this machine: one trial's
    request must fit it, or every trial would wait forever."""
    import os

    problems = []
    cores = os.cpu_count() or 1
    if cfg.resources.cpu > cores:
        problems.append(f"resources.cpu = {cfg.resources.cpu:g}: a trial asks for more cores than "
                        f"this machine has ({cores}), and a local sweep runs here. Fix: set "
                        f"resources.cpu to {cores} or less, or pass --address to run on a Ray "
                        f"cluster with bigger nodes.")
    gpu = cfg.resources.gpu
    if gpu != "auto" and gpu > 0:
        have = local_gpus()
        if gpu > max(have, 1) or have == 0:
            what = "no GPU" if have == 0 else f"{have} GPU(s)"
            problems.append(f"resources.gpu = {gpu:g}: this machine has {what}, and a local sweep "
                            f"runs here. Fix: set resources.gpu: 0 (train on CPU) or auto, or "
                            f"pass --address to run on a Ray cluster with GPUs.")
    return problems


class Preflight(NamedTuple):
    """What pre-flight returns: the sweep's trial spec, and what to show the user (the
    token-length table, warnings)."""

    spec: TrialSpec
    fit: DataFit


def preflight(cfg: SweepConfig, derived: SweepPlan) -> TrialSpec:
    """Every check that needs no Ray: data, model config, target groups. Returns the sweep's
    trial spec (each trial's is ``spec.for_trial(its searched values)``).

    Raises:
        UserError: with every problem found.
    """
    return preflight_report(cfg, derived).spec


def preflight_report(cfg: SweepConfig, derived: SweepPlan) -> Preflight:
    """:func:`preflight`, with the token-length table and the warnings that ``validate``
    prints and ``run`` logs.

    Raises:
        UserError: with every problem found.
    """
    data = data_sources(cfg, derived)
    fmt, problems, suffix = check_data(data)
    target_groups, model_problems = check_model(cfg, derived)
    problems += model_problems + check_storage(cfg.storage.path)
    task, task_problems = task_eval(cfg, derived)
    problems += task_problems
    if not model_problems:
        problems += check_chat_template(cfg.model.model_dump(), fmt)
        fit = check_data_fit(cfg.model.model_dump(), data, fmt, seed=cfg.training.seed)
        if derived.existing:  # the sweep trained on these lengths: said, not refused, now
            fit = DataFit(table=fit.table, warnings=fit.warnings + fit.problems)
        else:
            problems += fit.problems
    else:
        fit = DataFit()
    if problems:
        raise UserError(f"pre-flight found {len(problems)} problem(s)", derived.locate(problems))
    fit = DataFit(table=fit.table, warnings=derived.locate(fit.warnings))
    return Preflight(TrialSpec(
        model=cfg.model.model_dump(),
        data=data,
        data_format=fmt,
        lora=cfg.lora.model_dump(),
        training=cfg.training.model_dump(),
        target_groups=target_groups,
        threads=max(1, int(cfg.resources.cpu)),
        warm_start=cfg.resources.warm_start,
        early_eval=early_eval(cfg, derived),
        task_eval=task,
        # written into every checkpoint (trainables.generate.PROMPT_FORMAT)
        prompt_format={"data_format": fmt, "prompt_suffix": suffix},
    ), fit)


def task_eval(cfg: SweepConfig, derived: SweepPlan) -> tuple[dict[str, Any] | None, list[str]]:
    """What a trial needs to generate and score (``trainables/task_eval.py``), and the
    problems found importing custom scorers (the driver imports them, as every worker will)."""
    from trainables.scoring import ScorerError, load_function, module_sources

    from .rules import asha_rungs

    ev = cfg.evaluation
    if not ev.scorers:
        return None, []
    here = Path(derived.config_path).resolve().parent
    search_path = list(dict.fromkeys(
        [str((here / Path(p).expanduser()).resolve()) for p in ev.scorer_path]
        + [str(here), os.getcwd()]))
    problems, sources = [], {}
    for i, scorer in enumerate(ev.scorers):
        if scorer.type == "custom":
            try:
                load_function(scorer.function, search_path)
                sources.update(module_sources(scorer.function, search_path))  # for the workers
            except ScorerError as err:
                problems.append(f"evaluation.scorers[{i}].function = {scorer.function!r}: {err}. "
                                f"Fix: put the module beside the config file (or on the Python "
                                f"path) and name a function in it, as 'module:function'.")
    steps = None
    if ev.cadence == "rungs":
        steps = ([] if cfg.scheduler.type != "asha" else
                 asha_rungs(derived.grace_period, derived.max_t,
                            cfg.scheduler.reduction_factor))
    return {"scorers": [s.model_dump() for s in ev.scorers], "samples": ev.samples,
            "seed": cfg.search.seed, "max_new_tokens": ev.max_new_tokens,
            "batch_size": ev.batch_size, "steps": steps, "examples": ev.examples,
            "search_path": search_path, "sources": sources}, problems


def early_eval(cfg: SweepConfig, derived: SweepPlan) -> dict[str, Any] | None:
    """What a trial needs for ``scheduler.early_eval_samples`` (``trainables/early_eval.py``)."""
    if not derived.full_eval_from:
        return None
    return {"samples": cfg.scheduler.early_eval_samples, "full_from": derived.full_eval_from,
            "metric": cfg.search.metric, "seed": cfg.search.seed}
