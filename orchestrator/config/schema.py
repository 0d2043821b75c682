"""The sweep configuration: one pydantic model per concern, declared once.

Every field has a type, a default and a description (docs/reference/config.md is generated from
them). Unknown keys are errors. Rules that span fields live in :func:`check_rules`, which
collects every problem rather than stopping at the first. Nothing here imports torch or Ray.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trainables.metrics import OPTIMIZABLE as REPORTED_METRICS

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
# Ray 2.60 counts resources in 1/10000 units (ray_constants.MIN_RESOURCE_GRANULARITY).
MIN_GPU_SHARE = 0.0001


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class Quantization(Section):
    mode: Literal["4bit", "8bit", "none"] = Field(
        "4bit", description="Load the base model in 4-bit (QLoRA), 8-bit, or unquantized.")
    quant_type: Literal["nf4", "fp4"] = Field(
        "nf4", description="4-bit data type: NormalFloat4 (QLoRA's) or FP4.")
    double_quant: bool = Field(
        True, description="Quantize the quantization constants too (QLoRA's double quantization).")
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="dtype of the matmuls: auto = bfloat16 on a GPU that supports it, "
        "else float32.")


class ModelSection(Section):
    name_or_path: str = Field(
        "builtin:tiny-llama", min_length=1,
        description="Base causal LM: a Hub id, a local folder, or builtin:tiny-llama (pre-trained "
        "for the demo's pricing data only; for your own data use a real model, e.g. "
        "HuggingFaceTB/SmolLM2-135M-Instruct).")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    quantization: Quantization = Field(default_factory=Quantization,
                                       description="How the base model is quantized.")
    trust_remote_code: bool = Field(
        False, description="Allow model code from the Hub repo to run (only for repos you trust).")


class DataSource(Section):
    path: str = Field(..., min_length=1, description="A local .jsonl/.json/.csv/.parquet file "
                      "(relative to the config file) or a Hub dataset name.")
    split: str = Field("train", description="Split to read from a Hub dataset.")
    subset: str | None = Field(None, description="Hub dataset configuration name, if any.")

    @property
    def is_local(self) -> bool:
        """A file, not a Hub dataset: a Hub name is ``name`` or ``owner/name``, without a
        file suffix (``data/train.txt`` is a file, if an unsupported one)."""
        last = self.path.rsplit("/", 1)[-1]
        return (self.path.lower().endswith(DATA_SUFFIXES) or looks_like_a_path(self.path)
                or re.fullmatch(r"[^.]+\.[A-Za-z0-9]{1,8}", last) is not None)


def looks_like_a_path(name: str) -> bool:
    """A model or dataset name that can only be a local path: a Hub id is ``name`` or
    ``owner/name``, never starting with ``/``, ``.`` or ``~`` and with one slash at most."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1


def _source(value: Any) -> Any:
    return {"path": value} if isinstance(value, str) else value


class DataSection(Section):
    train: DataSource = Field(
        ..., description="Training data (a path string is shorthand for {path: ...}).")
    eval: DataSource | None = Field(
        None, description="Held-out eval data; when absent, eval_fraction of train is held out.")
    format: Literal["auto", "prompt_completion", "messages", "instruction"] = Field(
        "auto", description="Row format: prompt/completion columns, a messages list (chat), "
        "instruction/input/output, or auto-detected.")
    eval_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of train held out for eval when there is no eval.")
    max_length: int = Field(512, ge=8, description="Longest tokenized example (prompt + "
                            "completion); longer ones are truncated. Pre-flight refuses a value "
                            "that cuts any eval row or more than 5 % of the training rows.")
    max_eval_samples: int | None = Field(
        None, ge=1, description="Evaluate on at most this many eval rows (first N).")
    packing: bool = Field(
        False, description="Pack several training examples into each max_length sequence "
        "(TRL's best-fit decreasing) and train padding-free: no pad tokens, more examples per "
        "step; attention never crosses examples. The eval data is not packed, so eval metrics "
        "stay comparable.")

    columns: dict[str, str] = Field(
        default_factory=dict, description="Your files' own column names for the format's "
        "columns: {prompt: question, completion: answer} (or messages, instruction, input, "
        "output); columns not named keep their names.")

    _coerce = field_validator("train", "eval", mode="before")(_source)

    @field_validator("columns")
    @classmethod
    def _columns(cls, v):
        import difflib

        from trainables.data import MAPPABLE_COLUMNS

        unknown = [k for k in v if k not in MAPPABLE_COLUMNS]
        if unknown:
            close = {k: next(iter(difflib.get_close_matches(k, MAPPABLE_COLUMNS, n=1)), None)
                     for k in unknown}
            hint = "; ".join(f"did you mean {c} for {k}?" for k, c in close.items() if c)
            raise ValueError(f"{', '.join(unknown)} is not a column of a known format "
                             f"({', '.join(MAPPABLE_COLUMNS)}){'; ' + hint if hint else ''}. "
                             f"Fix: write the format's column name on the left and your file's on "
                             f"the right, e.g. {{prompt: question, completion: answer}}")
        twice = sorted({c for c in v.values() if list(v.values()).count(c) > 1})
        if twice:
            raise ValueError(f"the file column {', '.join(twice)} is mapped to more than one "
                             f"format column. Fix: map each file column once")
        return v


class LoraSection(Section):
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: float | None = Field(
        None, gt=0, description="LoRA alpha; when unset, alpha = alpha_ratio x r.")
    alpha_ratio: float = Field(2.0, gt=0, description="alpha / r, used when alpha is unset.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: str | list[str] = Field(
        "all-linear", description="Group (attention, mlp, all-linear) or explicit module names.")
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases train.")
    use_rslora: bool = Field(False, description="Rank-stabilised scaling alpha/sqrt(r).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("an explicit module list must name at least one module. Fix: name "
                             "them (e.g. [q_proj, v_proj]), or use a preset such as "
                             "attention or all-linear")
        return v


OPTIMIZERS = ("auto", "adamw_torch", "adamw_torch_fused", "paged_adamw_32bit",
              "paged_adamw_8bit", "adamw_bnb_8bit", "adafactor", "sgd")


class TrainingSection(Section):
    max_steps: int = Field(200, gt=0, description="Optimizer steps per trial (ASHA's budget).")
    per_device_train_batch_size: int = Field(8, gt=0, description="Train batch per device.")
    per_device_eval_batch_size: int = Field(16, gt=0, description="Eval batch per device.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Batches per optimizer step.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    eval_steps: int = Field(25, gt=0, description="Evaluate, report and checkpoint every N steps.")
    logging_steps: int = Field(5, gt=0, description="Log train loss every N steps.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps spent warming up.")
    lr_scheduler_type: Literal["linear", "cosine", "cosine_with_restarts", "polynomial",
                               "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    optim: Literal[OPTIMIZERS] = Field(  # type: ignore[valid-type]
        "auto", description="Optimizer; auto = paged_adamw_32bit on GPU, adamw_torch on CPU.")
    seed: int = Field(42, description="Seed for weights init, data order and dropout.")
    max_grad_norm: float = Field(0.3, ge=0, description="Gradient clipping (0 = off).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    deferred_metrics: bool = Field(
        True, description="Keep TRL's per-step metrics (token accuracy, entropy, token count, "
        "the NaN check of the loss) on the device and read them once per log, instead of a "
        "device sync on every step; false: TRL's own per-step reads. Same logged values while "
        "the loss is finite; a non-finite loss (a step's or an eval batch's) is logged as it "
        "is, not left out, and stops the trial as diverged.")


class SearchSection(Section):
    algorithm: Literal["optuna", "random", "grid"] = Field(
        "optuna", description="optuna (TPE), random, or grid (every combination of choices once).")
    num_trials: int = Field(8, gt=0, description="Trials to run (grid: ignored). With "
                            "search.budget and no num_trials: as many as the budget pays for.")
    budget: int | None = Field(
        None, description="The sweep's compute in training steps: 2880, or '2880 steps'. No "
        "trial starts once the trials have trained that many steps (each trial's furthest "
        "step, summed); running ones finish as ASHA lets them. Without search.num_trials, "
        "the sweep plans budget // (steps a trial is expected to train under ASHA) trials. "
        "Unset: no budget.")
    max_concurrent: int | None = Field(
        None, gt=0, description="Trials running at once; default: as many as the cluster fits.")
    metric: str = Field("eval_loss", description="Metric to optimise: "
                        + ", ".join(REPORTED_METRICS) + ", or a task metric of the "
                        "evaluation scorers (task_<name>..., listed by `qlora-sweep validate`).")
    mode: Literal["min", "max"] | None = Field(
        None, description="min or max; default follows the metric (losses and errors min, "
        "accuracies and hit rates max).")
    seed: int = Field(0, description="Seed of the search algorithm.")
    initial_points: list[dict[str, Any]] = Field(
        default_factory=list, description="Known-good configs (dotted keys) evaluated first.")

    @field_validator("budget", mode="before")
    @classmethod
    def _budget(cls, v):
        from .budget import parse_budget

        return None if v is None else parse_budget(v)


class SchedulerSection(Section):
    type: Literal["asha", "none"] = Field("asha", description="asha (early stopping) or none.")
    grace_period: int | None = Field(
        None, gt=0, description="Steps before ASHA may stop a trial; default: training.eval_steps.")
    reduction_factor: float = Field(2.0, gt=1, description="ASHA keeps 1/reduction_factor per rung.")
    max_t: int | None = Field(None, gt=0, description="ASHA's max_t, in steps: where every "
                              "trial ends; default and only value: training.max_steps (ASHA "
                              "stops a trial at max_t, so a lower one would cut every trial "
                              "short).")
    early_eval_samples: int | None = Field(
        None, ge=1, description="Evaluate on a fixed random subset of this many eval examples "
        "(the same for every trial) before ASHA's last stopping rung, and on the whole eval set "
        "from there on: early rungs, where most trials stop, rank trials on the subset, for less "
        "eval time. The metric's own columns hold whole-set values only (NaN at subset "
        "evaluations); ASHA and the searcher rank on search_value. Unset: always the whole set.")


class ResourcesSection(Section):
    cpu: float = Field(1.0, gt=0, description="CPUs per trial.")
    gpu: float | Literal["auto"] = Field(
        0.0, description="GPUs per trial: 0, 1, or a fraction (0.5) that packs trials on one "
        "GPU; more than one is refused (a trial trains on one device). auto: as many trials "
        "per GPU as fit the memory of the smallest GPU type a trial can land on (or of "
        "resources.accelerator_type), by an estimate of what one trial needs (quantized base, "
        "adapter, optimizer, activations for the largest r, batch and max_length searched); "
        "with no GPU in the cluster, trials run on CPU and reserve their estimated RAM "
        "(resources.memory_gb).")
    memory_gb: float | None = Field(
        None, gt=0, description="RAM reserved per trial in Ray's scheduler (Ray's memory "
        "resource), so no node runs more trials than its memory holds. Unset: none reserved "
        "(with resources.gpu: auto on CPU: the estimate).")
    accelerator_type: str | None = Field(
        None, min_length=1, description="Only nodes with this accelerator run trials (Ray's "
        "accelerator_type resource: A10G, L4, A100, H100, ...); needs resources.gpu > 0. "
        "With resources.gpu: auto, the share is sized on this type's GPUs (unset: on the "
        "smallest GPU type a trial can land on).")
    warm_start: bool = Field(
        True, description="A worker keeps the loaded, quantized base model for its next trial "
        "(Ray actor reuse): a new trial only swaps the LoRA adapter. false: every trial loads "
        "the model in a new process.")

    @field_validator("gpu")
    @classmethod
    def _gpu_fraction(cls, v: float | str) -> float | str:
        if v == "auto":
            return v
        if v < 0:
            raise ValueError("must be 0 or more, or auto. Fix: e.g. 1 for a GPU per trial, 0.5 "
                             "for two trials per GPU, 0 for CPU only")
        if v > 1:
            # The trainable loads the model on one device; with several GPUs visible and no
            # distributed launcher, transformers' Trainer wraps it in nn.DataParallel, which
            # TRL's SFTTrainer refuses: every trial would fail at its first step.
            raise ValueError("a trial trains on one GPU (the model is loaded on one device, "
                             "and TRL's SFTTrainer refuses the nn.DataParallel the Trainer "
                             "would wrap it in over several GPUs), so every trial would fail. "
                             "Fix: use resources.gpu: 1 (trials run side by side on the "
                             "cluster's other GPUs), a fraction (0.5) to pack trials on one "
                             "GPU, or auto")
        if 0 < v < MIN_GPU_SHARE:
            raise ValueError(f"below Ray's resource granularity ({MIN_GPU_SHARE}), so a trial "
                             f"would get no GPU at all. Fix: use {MIN_GPU_SHARE} or more, or 0 "
                             f"for CPU only")
        return v


class StorageSection(Section):
    path: str = Field("sweeps", description="Where sweep dirs go: a local path (relative to the "
                      "working directory); on a cluster, a cloud URI (s3://bucket/sweeps, "
                      "gs://...; credentials from the environment) or a shared file system "
                      "mounted on every node (with storage.shared).")
    name: str | None = Field(None, description="Sweep dir name; default: <config stem>-<time>.")
    keep_checkpoints: int = Field(2, ge=1, description="Best checkpoints kept per trial (by the "
                                  "metric; the newest is kept too while the trial runs, to resume "
                                  "from). A trial stopped early by ASHA keeps only its best.")
    max_gb: float | None = Field(
        None, gt=0, description="Disk budget of the sweep dir in GB: a warning at 80 %; at the "
        "limit trials go on reporting but save no new checkpoints. Unset: no limit.")
    shared: bool = Field(
        False, description="storage.path is a shared file system mounted at the same place on "
        "every node (NFS, EFS, Lustre...). Required for a local path on a Ray cluster of more "
        "than one node; checked from every node before the sweep starts.")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v):
        if v is not None and (not v or "/" in v or v.startswith(".")):
            raise ValueError("must be a plain folder name (no '/', not starting with '.'). Fix: "
                             "e.g. pricing-r16; the folder it goes in is storage.path")
        return v


REPO_ID_RULE = ("a Hub repo id: 'owner/name' or 'name', letters, digits, '-', '_', '.', at most "
                "96 characters, no '--' or '..', not starting or ending with '-' or '.'")


def valid_repo_id(repo_id: str) -> bool:
    """The Hub's repo-id rule, checked without importing huggingface_hub."""
    import re

    part = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
    return (len(repo_id) <= 96 and "--" not in repo_id and ".." not in repo_id
            and re.fullmatch(rf"(?:{part}/)?{part}", repo_id) is not None)


def parse_improvement(value: float | str) -> tuple[float, str]:
    """``0.02`` -> ``(0.02, "absolute")``; ``"2%"`` -> ``(0.02, "relative")``.

    Raises:
        ValueError: not a non-negative number or percentage.
    """
    from trainables.scoring import parse_amount

    number, relative = parse_amount(value, absolute="0.02", relative="2%")
    return number, "relative" if relative else "absolute"


class FailureSection(Section):
    max_retries: int = Field(
        2, ge=0, description="Times a trial whose worker fails (a crash, a killed process, a lost "
        "node) is restarted from its newest checkpoint. A diverged trial (NaN loss) is not "
        "trained again: its restarts end at once with the same error.")


class PromoteSection(Section):
    repo_id: str | None = Field(
        None, description="Hub repo the winning adapter is promoted to at the end of `run` "
        "(e.g. acme/pricing-qlora); unset: no push (`qlora-sweep promote` can do it later).")
    private: bool = Field(False, description="Create the repo as private when it does not exist.")
    min_improvement: float | str = Field(
        0.0, description="How much the sweep's winner must beat the adapter already in the repo "
        "(on the sweep's eval data and metric): a number is absolute (0.02), a percentage "
        "relative ('2%'). The winner must beat it strictly in any case, and on a task metric with "
        "per-item values beyond noise (a paired comparison over the eval items, its 95 % CI "
        "clear of 0).")

    @field_validator("repo_id")
    @classmethod
    def _repo_id(cls, v):
        if v is not None and not valid_repo_id(v):
            raise ValueError(f"must be {REPO_ID_RULE}. Fix: e.g. acme/pricing-qlora")
        return v

    @field_validator("min_improvement")
    @classmethod
    def _improvement(cls, v):
        parse_improvement(v)
        return v


SCORER_TYPES = ("exact_match", "contains", "number", "label", "custom")


class Scorer(Section):
    type: Literal[SCORER_TYPES] = Field(  # type: ignore[valid-type]
        ..., description="exact_match (after normalising whitespace), contains (the reference "
        "is in the prediction), number (a regex extracts a number: MAE, RMSLE, hit rate within "
        "a tolerance), label (classification accuracy), or custom (your function).")
    name: str | None = Field(
        None, pattern=r"^[a-z][a-z0-9_]*$", description="Names the metrics: task_<name> (number: "
        "task_<name>_mae, _rmsle, _hit, _parsed; custom: task_<name>_<key>). Default: the type "
        "(label: label_accuracy; custom: the function's name).")
    pattern: str | None = Field(
        None, description="number: the regex whose first group (or whole match) is the number, "
        "applied to prediction and reference alike (e.g. '\\$([0-9.,]+)'); default: the first "
        "number in the text. A prediction without one counts as 0 and as a miss.")
    tolerance: float | str = Field(
        "10%", description="number: how close counts as a hit (task_<name>_hit): an absolute "
        "difference (5) or a percentage of the reference ('10%').")
    labels: list[str] | None = Field(
        None, description="label: the labels; a prediction's label is the first one it starts "
        "with (longest first). Unset: its first word.")
    function: str | None = Field(
        None, description="custom: 'module:function' called with (predictions, references), two "
        "lists of strings, returning a dict of floats; the module is imported from the config "
        "file's folder or the Python path.")
    metrics: dict[str, Literal["min", "max"]] | None = Field(
        None, description="custom: the keys the function returns, each with its better "
        "direction: {f1: max, error: min}.")

    @field_validator("pattern")
    @classmethod
    def _regex(cls, v):
        if v is not None:
            import re

            try:
                re.compile(v)
            except re.error as err:
                raise ValueError(f"not a valid regular expression ({err}). Fix: correct it; in "
                                 f"YAML, single-quote it so backslashes stay") from None
        return v

    @field_validator("tolerance")
    @classmethod
    def _tolerance(cls, v):
        from trainables.scoring import parse_tolerance

        parse_tolerance(v)
        return v


class EvaluationSection(Section):
    scorers: list[Scorer] = Field(
        default_factory=list, description="How a generated completion is scored (task metrics, "
        "reported with the loss at each evaluation). Empty: trials are judged by their loss only.")
    samples: int | None = Field(
        None, ge=1, description="Eval rows the model answers at each evaluation (drawn once with "
        "search.seed, the same for every trial and the references). Unset: all of them.")
    max_new_tokens: int = Field(32, ge=1, description="Longest generated answer, in tokens.")
    batch_size: int = Field(32, ge=1, description="Prompts generated at once (left-padded).")
    cadence: Literal["every", "rungs"] = Field(
        "every", description="every: generate at every evaluation; rungs: only at ASHA's rungs "
        "and at a trial's last step (task metrics are NaN at the other evaluations).")
    examples: int = Field(
        4, ge=0, description="(prompt, reference, prediction) examples kept per evaluation, "
        "shown in TensorBoard's text tab and in the report.")
    scorer_path: list[str] = Field(
        default_factory=list, description="Folders a custom scorer's module is imported from "
        "(relative to the config file), before the config file's folder and the working "
        "directory; the sweep dir's sweep.yaml records them all, absolute, so promote and "
        "resume find the module again.")


class SweepConfig(Section):
    model: ModelSection = Field(default_factory=ModelSection, description="The base model.")
    data: DataSection = Field(..., description="Training and eval data.")
    lora: LoraSection = Field(default_factory=LoraSection,
                              description="Fixed LoRA settings (used where not searched).")
    training: TrainingSection = Field(default_factory=TrainingSection,
                                      description="Fixed SFT settings (used where not searched).")
    search_space: dict[str, Any] = Field(
        default_factory=dict, description="Searched settings (dotted names), optionally on top "
        "of a preset: {preset: cpu-demo, lora.r: {choice: [8, 16]}}. Any lora.* or training.* "
        "setting but training.max_steps and training.eval_steps, which every trial shares. "
        "auto (or {preset: auto, ...}): a space built from the model and the data (learning "
        "rate centred on a calibrated LoRA rate for the model's family and width, all-linear "
        "then mlp targets, rank ladder, dropout) with initial points drawn from it; "
        "`qlora-sweep validate` prints it and why, sweep.yaml records it.")
    search: SearchSection = Field(default_factory=SearchSection, description="Search algorithm.")
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection,
                                        description="Early stopping.")
    resources: ResourcesSection = Field(default_factory=ResourcesSection,
                                        description="Per-trial resources.")
    storage: StorageSection = Field(default_factory=StorageSection,
                                    description="Where results go.")
    failure: FailureSection = Field(default_factory=FailureSection,
                                    description="What happens when a trial's worker fails.")
    promote: PromoteSection = Field(default_factory=PromoteSection,
                                    description="Pushing the winner to the Hugging Face Hub.")
    evaluation: EvaluationSection = Field(
        default_factory=EvaluationSection,
        description="Task metrics: what the model generates for eval prompts, scored.")

    @field_validator("search_space", mode="before")
    @classmethod
    def _preset_shorthand(cls, v):
        return {"preset": v} if isinstance(v, str) else v

    @property
    def reported_metrics(self) -> dict[str, str]:
        """Every metric a trial of this sweep reports that a sweep may optimise, with its
        better direction: the loss metrics and the scorers' task metrics."""
        return reported_metrics(self.evaluation.scorers)

    @property
    def mode(self) -> str:
        """The objective's direction: search.mode, else the metric's own."""
        return self.search.mode or self.reported_metrics.get(self.search.metric, "min")


def reported_metrics(scorers: list) -> dict[str, str]:
    """The optimisable metrics of a sweep with these scorers (models or dicts), with modes."""
    from trainables.scoring import all_metric_modes

    specs = [s.model_dump() if isinstance(s, BaseModel) else s for s in scorers]
    return {**REPORTED_METRICS, **all_metric_modes(specs)}
