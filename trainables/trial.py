"""One QLoRA trial: base model + LoRA + TRL's SFTTrainer, reporting each evaluation.

``run_trial`` needs no Ray and is what tests and debugging call directly; ``tune_trainable``
is the thin wrapper Ray Tune runs, which reports through ``tune.report`` and resumes from
``tune.get_checkpoint()``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .callbacks import Report, ReportCallback, TrainingDiverged, reset_peak_memory
from .disk import over_budget
from .scoring import ScorerError, ScorerImportError
from .spec import TrialSpec
from .storage import read_file, write_file

log = logging.getLogger(__name__)

# In a trial's folder: why it diverged (or its scorer failed), so a restarted trial does not
# train again to find out.
DIVERGED_MARKER = "diverged.txt"
SCORER_FAILED = "ScorerError: "  # how the marker starts when a scorer failed


def _optimizer(name: str) -> str:
    import torch

    if name != "auto":
        return name
    return "paged_adamw_32bit" if torch.cuda.is_available() else "adamw_torch"


def deferred_metrics(spec: TrialSpec) -> bool:
    """Whether the trial keeps TRL's per-step metrics on the device until a log reads them."""
    from . import deferred_metrics as deferred

    return bool(spec.training.get("deferred_metrics", True)) and deferred.supported()


def sft_config(spec: TrialSpec, output_dir: str, *, save: bool = True,
               prepared: bool = False):
    """TRL ``SFTConfig`` for the trial: evaluate, report and checkpoint every ``eval_steps``.
    ``prepared``: the datasets are tokenized already (by the sweep, once), so TRL skips that."""
    import torch
    from trl import SFTConfig

    from .model import compute_dtype

    t = spec.training
    cuda = torch.cuda.is_available()
    bf16 = cuda and compute_dtype(spec.model["quantization"]["compute_dtype"]) == torch.bfloat16
    return SFTConfig(
        output_dir=output_dir,
        max_steps=t["max_steps"],
        per_device_train_batch_size=t["per_device_train_batch_size"],
        per_device_eval_batch_size=t["per_device_eval_batch_size"],
        gradient_accumulation_steps=t["gradient_accumulation_steps"],
        learning_rate=float(t["learning_rate"]),
        warmup_steps=int(round(float(t["warmup_ratio"]) * t["max_steps"])),
        lr_scheduler_type=t["lr_scheduler_type"],
        weight_decay=float(t["weight_decay"]),
        optim=_optimizer(t["optim"]),
        seed=int(t["seed"]),
        data_seed=int(t["seed"]),
        max_grad_norm=float(t["max_grad_norm"]),
        gradient_checkpointing=bool(t["gradient_checkpointing"]),
        eval_strategy="steps",
        eval_steps=t["eval_steps"],
        logging_steps=t["logging_steps"],
        save_strategy="steps" if save else "no",
        save_steps=t["eval_steps"],
        report_to="none",
        disable_tqdm=True,
        log_level="error",
        max_length=spec.data["max_length"],
        # Packed training rows, padding-free (best-fit decreasing); eval rows as they are.
        packing=bool(spec.data.get("packing")),
        eval_packing=False,
        use_cpu=not cuda,
        bf16=bf16,
        dataloader_pin_memory=cuda,
        # The NaN/inf filter reads the loss on every step; deferred, a non-finite loss shows in
        # the logged train loss instead, and ReportCallback stops the trial on it.
        logging_nan_inf_filter=not deferred_metrics(spec),
        dataset_kwargs={"skip_prepare_dataset": True} if prepared else None,
    )


def build_trainer(spec: TrialSpec, output_dir: str, *, callbacks=(), save: bool = True,
                  adapter_dir: str | None = None):
    """Load model, data and tokenizer and return a ready ``SFTTrainer``.

    The base model is the one this process keeps from its previous trial when there is one
    (``trainables/warm.py``); the data is the sweep's tokenized copy when the spec carries
    one (``prepared_data``), else it is loaded and tokenized here. With ``adapter_dir`` the
    saved adapter there is loaded (frozen) instead of a fresh one.
    """
    import transformers
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    from . import warm
    from .model import attach_lora, load_base_model, load_tokenizer, quiet_transformers

    quiet_transformers()
    seed = int(spec.training["seed"])
    tokenizer = load_tokenizer(spec.model)
    prepared = spec.prepared_data
    if prepared is not None and prepared.get("seed", seed) != seed:
        # Tokenized for another seed, whose held-out eval split differs (a trial restored
        # from before a search-space change that stopped searching the seed).
        prepared = None
    if prepared is not None:
        from .data import from_table

        train, evalset = from_table(prepared["train"]), from_table(prepared["eval"])
    else:
        from .data import load_splits

        train, evalset, _fmt = load_splits(spec.data, seed=seed, rows=spec.data_rows)
    base, was_warm = warm.base_model(spec.model, load_base_model, keep=spec.warm_start)
    transformers.set_seed(seed)  # LoRA's A matrices are drawn here
    lora = spec.lora
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=False)
    else:
        model = attach_lora(base, lora, lora["resolved_target_modules"])
    warm.holds(model)
    trainer_class = SFTTrainer
    if deferred_metrics(spec):
        from .deferred_metrics import trainer_class as deferred_trainer

        trainer_class = deferred_trainer()
    trainer = trainer_class(
        model=model,
        args=sft_config(spec, output_dir, save=save, prepared=prepared is not None),
        train_dataset=train,
        eval_dataset=evalset,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    trainer.qlora_start = {"warm_start": int(was_warm), "data_tokenized": int(prepared is None)}
    for name, ds in (("training", trainer.train_dataset), ("eval", trainer.eval_dataset)):
        if len(ds) == 0:
            from .data import DataError

            raise DataError(
                f"every {name} example lost its completion to truncation at data.max_length = "
                f"{spec.data['max_length']} tokens, so nothing is left to learn from. "
                f"Fix: raise data.max_length.")
    # The Trainer prints every log dict when progress bars are off; trials report instead.
    trainer.remove_callback(PrinterCallback)
    return trainer


def _limit_threads(spec: TrialSpec) -> None:
    import torch

    if spec.threads:
        torch.set_num_threads(max(1, int(spec.threads)))


def run_trial(spec: TrialSpec, *, output_dir: str | os.PathLike,
              report: Report | None = None, resume_from: str | None = None,
              started: float | None = None, should_stop=None) -> list[dict]:
    """Train one trial and return its reported metrics, one dict per evaluation.

    Without ``report`` the checkpoints stay in ``output_dir/checkpoint-<step>``. ``started``
    and ``should_stop``: see :class:`ReportCallback`.

    Raises:
        TrainingDiverged: the loss became NaN or infinite.
    """
    _limit_threads(spec)
    reset_peak_memory()  # this trial's peak, not the worker's since it started
    callback = ReportCallback(report or (lambda metrics, ckpt: None), started=started,
                              should_stop=should_stop)
    trainer = build_trainer(spec, str(output_dir), callbacks=[callback])
    callback.extra.update(trainer.qlora_start)
    callback.eval_size = lambda: len(trainer.eval_dataset)
    if spec.task_eval:  # before EarlyEval, which may point eval_dataset at a subset
        from .task_eval import TaskEval

        callback.task = TaskEval(spec.task_eval, trainer.eval_dataset,
                                 trainer.processing_class)
    if spec.early_eval:
        from .early_eval import EarlyEval

        callback.early = EarlyEval(trainer, spec.early_eval)
        trainer.add_callback(callback.early)
    trainer.train(resume_from_checkpoint=resume_from)
    return callback.history


def _restore(checkpoint_dir: str, output_dir: str) -> str:
    """Copy a reported checkpoint where the Trainer expects it; returns its path."""
    state = json.loads((Path(checkpoint_dir) / "trainer_state.json").read_text())
    dest = os.path.join(output_dir, f"checkpoint-{state['global_step']}")
    shutil.copytree(checkpoint_dir, dest)
    return dest


def _trial_storage():
    """``(filesystem, trial folder)`` of the running trial in the sweep's storage (local or
    cloud), as Ray persists its checkpoints there (``TuneContext.get_storage``, a Ray
    developer API)."""
    from ray import tune

    storage = tune.get_context().get_storage()
    return storage.storage_filesystem, storage.trial_fs_path


def _quiet_stop() -> None:
    """Ray stops a trial's worker with SIGTERM, and its handler raises SystemExit wherever the
    process is: inside a garbage-collection callback Python prints that as "Exception ignored
    in ..." with a traceback, which reaches the sweep's console. That exit is the one asked
    for; any other unraisable exception is reported as before."""
    if getattr(sys.unraisablehook, "qlora_sweep", False):
        return  # a reused worker has it already
    default = sys.unraisablehook

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, SystemExit):
            default(unraisable)

    hook.qlora_sweep = True
    sys.unraisablehook = hook


def failure_marker(err: BaseException) -> str | None:
    """What a trial's restarts are told of this failure (``DIVERGED_MARKER``), so they end at
    once with it; None: the restarts try again.

    A divergence, and a scorer that raises or returns nonsense, would only happen again: the
    trial errors with its message once, and the sweep goes on. A scorer module that could not
    be imported may be there on another node, or in a later try."""
    if isinstance(err, TrainingDiverged):
        return str(err)
    if isinstance(err, ScorerError) and not isinstance(err, ScorerImportError):
        return SCORER_FAILED + str(err)
    return None


def tune_trainable(config: dict[str, Any], *, base: TrialSpec) -> None:
    """Ray Tune entry point: ``tune.with_parameters(tune_trainable, base=spec)``; ``config``
    is the trial's searched values."""
    import ray
    from ray import tune

    from .checkpoints import restore_usable
    from .compat.ray_private import stop_requested
    from .generate import PROMPT_FORMAT

    # Ray logs a line per persisted checkpoint; the driver's table already shows progress.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    _quiet_stop()
    started = time.monotonic()
    spec = base.for_trial(config)
    output_dir = tempfile.mkdtemp(prefix="qlora-sweep-trial-")

    warned = []

    node_id = ray.get_runtime_context().get_node_id()  # node_ip is 127.0.0.1 for every local node

    def report(metrics: dict, checkpoint_dir: str) -> None:
        metrics = {**metrics, "node_id": node_id}
        full = over_budget(spec.disk_budget)
        if full is None:
            if spec.prompt_format:  # the format travels with the checkpoint
                Path(checkpoint_dir, PROMPT_FORMAT).write_text(json.dumps(spec.prompt_format))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))
        else:  # the metrics still count; the sweep dir gets no new checkpoint
            if not warned:
                log.warning(f"warning: {full}")
                warned.append(full)
            tune.report({**metrics, "checkpoint_skipped": full})
        # Ray has persisted the checkpoint to the sweep's storage; the local copy can go.
        shutil.rmtree(checkpoint_dir, ignore_errors=True)

    # Ray restarts a failed trial (failure.max_retries) whatever the error, maybe on another
    # node; a divergence would only happen again, so a restarted trial that diverged before
    # ends at once. The marker lives in the trial's folder in the sweep's storage.
    fs, trial_path = _trial_storage()
    diverged = posixpath.join(trial_path, DIVERGED_MARKER)
    before = read_file(fs, diverged)
    if before is not None:
        if before.startswith(SCORER_FAILED):
            raise ScorerError(before.removeprefix(SCORER_FAILED))
        raise TrainingDiverged(before)
    try:
        resume = None
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:  # the newest readable one, with a warning if not Ray's
            resume = restore_usable(checkpoint, lambda local: _restore(local, output_dir))
        run_trial(spec, output_dir=output_dir, report=report, resume_from=resume,
                  started=started, should_stop=stop_requested)
    except (TrainingDiverged, ScorerError) as err:
        marker = failure_marker(err)
        if marker is not None:
            write_file(fs, diverged, marker)
        raise
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)


def _eval_metrics(trainer, task: dict[str, Any] | None = None, *,
                  constant: bool = False, spec: TrialSpec | None = None) -> dict[str, Any]:
    """The loss metrics of one evaluation; with ``task`` the task metrics too, and with
    ``constant`` the constant-answer reference (``constant_reference``) and how varied the
    references are (``task_reference_distinct``)."""
    import math

    metrics = trainer.evaluate()
    loss = float(metrics["eval_loss"])
    out = {
        "eval_loss": loss,
        "eval_perplexity": math.exp(min(loss, 50.0)),
        "eval_mean_token_accuracy": float(metrics.get("eval_mean_token_accuracy", 0.0)),
        "train_loss": float("nan"),
        "eval_samples": len(trainer.eval_dataset),
    }
    if task:
        from .scoring import constant_reference, normalize, scorer_name
        from .task_eval import TaskEval

        judge = TaskEval(task, trainer.eval_dataset, trainer.processing_class)
        out.update(judge.evaluate(trainer.model))
        out["task_samples"] = len(judge.references)
        if constant:
            from .items import ITEMS, record

            out["task_reference_distinct"] = len({normalize(r) for r in judge.references})
            reference = constant_reference(task["scorers"], training_completions(spec),
                                           judge.references)
            # The constant answers' per-item values, on the same items as every trial's.
            answers = reference["answers"]
            reference[ITEMS] = _merge_items([
                record([s], [answers[scorer_name(s)]] * len(judge.references), judge.references)
                for s in task["scorers"]])
            out["constant_reference"] = reference
    return out


def _merge_items(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One per-item record from several over the same items (one per scorer)."""
    merged = dict(records[0]) if records else {}
    merged["values"] = {k: v for r in records for k, v in r["values"].items()}
    return merged


def training_completions(spec: TrialSpec) -> list[str]:
    """The training set's completions as text (a chat row's: the assistant's reply)."""
    from .data import load_splits

    train, _evalset, _fmt = load_splits(spec.data, seed=int(spec.training["seed"]),
                                        rows=spec.data_rows)
    return [c if isinstance(c, str) else c[-1]["content"] for c in train["completion"]]


def evaluate_baseline(spec: TrialSpec) -> dict[str, Any]:
    """Evaluate the base model, without an adapter, exactly as trials are evaluated.

    A fresh LoRA adapter has B = 0, so the wrapped model computes exactly the base model's
    outputs; going through the same SFTTrainer makes the tokenization, the completion-only
    masking and the loss identical to the trials', so the baseline is comparable.

    The training and eval sets as TRL tokenized them here come back under ``prepared_data``
    (Arrow tables), for the trials to share: the data is tokenized once per sweep.
    """
    return _evaluate(spec.for_trial({"lora.use_dora": False}), None, keep_data=True)


def evaluate_adapters(spec: TrialSpec, adapter_dirs: list[str | os.PathLike]
                      ) -> list[dict[str, float]]:
    """Evaluate saved adapters on the sweep's eval set, one metrics dict each.

    The same SFTTrainer evaluation as the trials', so the numbers compare with theirs: this
    is how a champion on the Hub and a sweep's winner are judged on equal terms. The base
    model is loaded and quantized once for all of them (``trainables/warm.py``); the process
    does not keep it afterwards.
    """
    from . import warm

    try:
        return [_evaluate(spec, adapter_dir, keep_base=True) for adapter_dir in adapter_dirs]
    finally:
        warm.forget()


def prepare_data(spec: TrialSpec) -> dict[str, Any]:
    """The training and eval sets as TRL tokenizes them for a trial (Arrow tables), to be
    shared by the trials as ``prepared_data``: what :func:`evaluate_baseline` returns with its
    metrics, without the evaluation (a resumed sweep has its baseline already)."""
    with _one_off_trainer(spec.for_trial({"lora.use_dora": False}), None) as trainer:
        return _tables(trainer)


@contextlib.contextmanager
def _one_off_trainer(spec: TrialSpec, adapter_dir, *, keep_base: bool = False):
    """A Trainer for one evaluation or tokenization, in a scratch folder removed after; its
    process does not keep the base model afterwards unless ``keep_base`` (then the next one
    on the same base model takes it back: ``trainables/warm.py``)."""
    _limit_threads(spec)
    output_dir = tempfile.mkdtemp(prefix="qlora-sweep-eval-")
    try:
        yield build_trainer(spec.replace(warm_start=keep_base), output_dir, save=False,
                            adapter_dir=None if adapter_dir is None else str(adapter_dir))
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)


def _tables(trainer) -> dict[str, Any]:
    """The trainer's tokenized datasets, and the seed that drew their train/eval split."""
    from .data import to_table

    return {"train": to_table(trainer.train_dataset), "eval": to_table(trainer.eval_dataset),
            "seed": int(trainer.args.seed)}


def _evaluate(spec: TrialSpec, adapter_dir, *, keep_data: bool = False,
              keep_base: bool = False) -> dict[str, Any]:
    with _one_off_trainer(spec, adapter_dir, keep_base=keep_base) as trainer:
        # The baseline (keep_data) also scores the constant-answer reference.
        metrics = _eval_metrics(trainer, spec.task_eval, constant=keep_data, spec=spec)
        if keep_data:
            metrics["prepared_data"] = _tables(trainer)
        return metrics
