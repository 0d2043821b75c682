"""The model card (the Hub's README.md format) of the bundle."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from trainables.lora import lora_alpha

from ..sweepdir.results import is_share, vs_base


METRIC_TYPES = {"eval_loss": ("loss", "eval loss"),
                "eval_perplexity": ("perplexity", "eval perplexity"),
                "eval_mean_token_accuracy": ("accuracy", "eval mean token accuracy")}


def is_hub_id(name: str) -> bool:
    """A base model the Hub can link to (not the builtin model, not a local folder)."""
    from ..config.schema import valid_repo_id

    return (not name.startswith("builtin:") and not Path(name).expanduser().exists()
            and valid_repo_id(name))


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def card_data(facts: dict[str, Any], *, repo_id: str | None):
    """The card's YAML metadata, with a ``model-index`` of the winner's eval results."""
    from huggingface_hub import EvalResult, ModelCardData

    base = facts["base_model"]["name_or_path"]
    data = facts["data"]
    evaluation = data["eval"] or {}
    hub_datasets = [d["hub_id"] for d in (data["train"], evaluation) if d and d.get("hub_id")]
    dataset_type = evaluation.get("hub_id") or data["train"].get("hub_id") or "json"
    dataset_name = (evaluation.get("hub_id") or evaluation.get("file")
                    or f"held-out part of {data['train'].get('file') or data['train'].get('hub_id')}")
    results = []
    for key, value, metric_type, metric_name in _index_metrics(facts):
        if value is not None and math.isfinite(float(value)):
            results.append(EvalResult(task_type="text-generation", task_name="Text generation",
                                      dataset_type=dataset_type, dataset_name=dataset_name,
                                      dataset_split=evaluation.get("split", "eval"),
                                      metric_type=metric_type, metric_name=metric_name,
                                      metric_value=round(float(value), 6)))
    quantized = facts["base_model"]["quantization"]["mode"] != "none"
    tags = ["qlora" if quantized else "lora", "lora", "peft", "qlora-sweep", "text-generation"]
    return ModelCardData(
        base_model=base if is_hub_id(base) else None,
        library_name="peft",
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys(tags)),
        datasets=hub_datasets or None,
        model_name=(repo_id or facts["sweep"]["name"]).split("/")[-1],
        eval_results=results or None,
    )


def _index_metrics(facts: dict[str, Any]) -> list[tuple[str, Any, str, str]]:
    """``(key, value, metric_type, metric_name)`` of the ``model-index``: first the metric that
    picked the winner (a task metric too), then the winner's other task metrics (each scorer's
    primary one), then the loss metrics."""
    winner, metric = facts["winner"], facts["sweep"]["metric"]
    rows = (winner.get("verdict") or {}).get("rows") or {}
    primaries = [m for m in rows.get("winner") or {} if m != "task_distinct"]
    values = {**(winner.get("task") or {}), **(winner.get("eval") or {}), metric: winner["value"]}
    out = []
    for key in dict.fromkeys([metric, *primaries, *METRIC_TYPES]):
        if key in METRIC_TYPES:
            metric_type, name = METRIC_TYPES[key]
        else:  # a task metric: the scorer's name and statistic, as the sweep reports it
            metric_type, name = key.removeprefix("task_"), f"{key.removeprefix('task_')} (task metric)"
        if key == metric:
            name += ", the sweep's objective"
        out.append((key, values.get(key), metric_type, name))
    return out


def _revision(base: dict[str, Any]) -> str:
    """The base model's revision as a sentence can say it (never "None")."""
    if base.get("revision"):
        return f"`{base['revision']}`"
    if is_hub_id(base["name_or_path"]):
        return "not pinned (the Hub's main branch when the sweep ran)"
    return "not recorded (a local model folder)"


def _usage(facts: dict[str, Any], repo_id: str | None) -> str:
    base = facts["base_model"]
    adapter = repo_id or "path/to/promoted"
    quant = base["quantization"]
    if not is_hub_id(base["name_or_path"]):
        return (f"The base model is `{base['name_or_path']}` (revision {_revision(base)}), "
                f"which is not on the Hub; `qlora-sweep generate` loads it with this adapter:\n\n"
                f"```bash\nqlora-sweep generate {adapter} \"your prompt\"\n```\n")
    if quant["mode"] == "4bit":
        qconf = (f"BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=\"{quant['quant_type']}\", "
                 f"bnb_4bit_use_double_quant={quant['double_quant']})")
    elif quant["mode"] == "8bit":
        qconf = "BitsAndBytesConfig(load_in_8bit=True)"
    else:
        qconf = "None"
    return f"""```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

base = AutoModelForCausalLM.from_pretrained(
    "{base['name_or_path']}", quantization_config={qconf})
model = PeftModel.from_pretrained(base, "{adapter}")
tokenizer = AutoTokenizer.from_pretrained("{adapter}")
```

or, with the same prompt format as in training:

```bash
qlora-sweep generate {adapter} "your prompt"
```
"""


def render_card(facts: dict[str, Any], *, repo_id: str | None, curve: bool) -> str:
    """The model card: YAML metadata and a body a person reads."""
    from huggingface_hub import ModelCard

    sweep, winner, base = facts["sweep"], facts["winner"], facts["base_model"]
    metric, mode = sweep["metric"], sweep["mode"]
    data = facts["data"]
    train = data["train"]
    baseline = (facts.get("baseline") or {}).get(metric)
    searched = winner["searched"]
    lora, training = facts["lora"], facts["training"]
    settings = {**{f"lora.{k}": v for k, v in lora.items()},
                **{f"training.{k}": v for k, v in training.items()}, **searched}
    alpha = lora_alpha({k.removeprefix("lora."): v for k, v in settings.items()
                        if k.startswith("lora.")})
    hyper = {**{f"lora.{k}": lora[k] for k in ("r", "alpha_ratio", "dropout", "target_modules",
                                                "use_rslora", "use_dora")},
             **{f"training.{k}": training[k] for k in ("learning_rate", "max_steps",
                                                       "per_device_train_batch_size",
                                                       "gradient_accumulation_steps",
                                                       "lr_scheduler_type", "warmup_ratio")},
             **searched}
    hyper_rows = [[k, v, "searched" if k in searched else "fixed"] for k, v in hyper.items()]
    hyper_rows.insert(2, ["lora.alpha", alpha, "alpha_ratio × r"])
    hyper_rows.insert(5, ["target modules", ", ".join(winner.get("target_modules") or []),
                          "what the group selects in this model"])
    share = is_share(metric, sweep.get("scorers"))  # an accuracy: the change in points
    trials = [t for t in facts["trials"] if t.get(f"best_{metric}") is not None]
    compare = [["**this adapter** (trial " + winner["trial_id"] + ")", winner["value"],
                _delta(winner["value"], baseline, share), winner["step"]]]
    compare += [[f"runner-up {i} (trial {t['trial_id']}, {t['status']})", t[f"best_{metric}"],
                 _delta(t[f"best_{metric}"], baseline, share), t.get("best_step")]
                for i, t in enumerate([t for t in trials if t["trial_id"] != winner["trial_id"]][:4], 1)]
    if baseline is not None:
        compare.append(["base model without adapter", baseline, "", 0])
    statuses = {}
    for t in facts["trials"]:
        statuses[t["status"]] = statuses.get(t["status"], 0) + 1
    space_rows = [[k, v, searched.get(k)] for k, v in sweep["search_space"].items()]
    data_name = train.get("file") or train.get("hub_id")
    libs = ", ".join(f"{k} {v}" for k, v in facts["libraries"].items() if v)
    project = facts["project"]
    commit = (f"{project['commit'][:12]}{' (with local changes)' if project['dirty'] else ''}"
              if project.get("commit") else "unknown")
    body = f"""
# {(repo_id or sweep['name']).split('/')[-1]}

A {'QLoRA' if base['quantization']['mode'] != 'none' else 'LoRA'} adapter for
`{base['name_or_path']}`, fine-tuned on `{data_name}` ({data['format']} format). It is the
winner of the hyperparameter sweep `{sweep['name']}`: {_trials_searched(sweep)}, ranked by {metric}
({'lower' if mode == 'min' else 'higher'} is better) on the same eval data.

## How to use it

{_usage(facts, repo_id)}
## Evaluation

{metric} on the eval set ({_eval_description(data, facts.get("baseline"), metric)}), against the base model and the runner-up
trials of the same sweep:

{_table(["model", metric, "vs base model", "step"], compare)}
{"" if not curve else chr(10) + "![eval loss of every trial; the winner in bold](training_curve.png)" + chr(10)}
{_task_section(facts)}
## Hyperparameters

{_table(["setting", "value", ""], hyper_rows)}

The base model was loaded in {_quant(base['quantization'])}; the adapter was trained for at
most {training['max_steps']} steps and this is its checkpoint at step {winner['step']}.

## How the sweep was run

{_table(["searched setting", "space", "winner"], space_rows)}

- search: {sweep['algorithm']}, seed {sweep['search_seed']}; training seed {training['seed']}
- trials: {', '.join(f'{n} {s}' for s, n in statuses.items())}
- training data: `{data_name}` (sha256 `{train.get('sha256') or train.get('fingerprint')}`)
- base model revision: {_revision(base)}
- libraries: {libs}
- qlora-sweep commit: `{commit}`

Every trial's values and results are in `sweep_summary.json`.
"""
    return str(ModelCard(f"---\n{card_data(facts, repo_id=repo_id).to_yaml()}\n---\n{body}"))


def _task_section(facts: dict[str, Any]) -> str:
    """What the adapter answers, scored: this adapter vs the base model vs the constant answer,
    and the sweep's warnings when it does not beat the constant or its answers collapse."""
    winner = facts["winner"]
    verdict = winner.get("verdict")
    if not verdict:
        return ""
    rows = verdict["rows"]
    metrics = list(rows["winner"])
    answers = ((facts.get("baseline") or {}).get("constant_reference") or {}).get("answers") or {}
    constant = "constant answer" + (f" ({', '.join(repr(a) for a in dict.fromkeys(answers.values()))} "
                                    f"to every prompt)" if answers else "")
    samples = (facts.get("baseline") or {}).get("task_samples")
    table = _table(["model", *[m.removeprefix("task_") for m in metrics]], [
        ["**this adapter**", *[rows["winner"][m] for m in metrics]],
        ["base model without adapter", *[rows["base model"][m] for m in metrics]],
        [constant, *[rows["constant answer"][m] for m in metrics]]])
    from ..observe.verdict import comparison_lines, conclusion
    from ..observe.winner import lines

    said = [*comparison_lines(verdict), *[c for c in [conclusion(verdict)] if c],
            *lines({"metric": facts["sweep"]["metric"], **winner})]
    bullets = "".join(f"- {line}\n" for line in said)
    notes = "".join(f"\n> **Warning:** {w}\n" for w in verdict["warnings"])
    return (f"\n### Task metrics\n\nGreedy answers to {samples or 'the'} eval prompts, scored "
            f"against the references; the constant answer is what a model that learned only "
            f"the answers' format and distribution would score. \"Beats\" is a paired "
            f"comparison over the same eval items (a bootstrap of the per-item differences, "
            f"95 % confidence interval).\n\n{table}\n\n{bullets}{notes}")


def _quant(quant: dict[str, Any]) -> str:
    if quant["mode"] == "4bit":
        return (f"4-bit {quant['quant_type'].upper()}"
                f"{' with double quantization' if quant['double_quant'] else ''}")
    return "8-bit" if quant["mode"] == "8bit" else "full precision (no quantization)"


def _delta(value, baseline, share: bool = False) -> str:
    """The change from the base model as the leaderboard shows it (points for an accuracy)."""
    return "" if value is None or baseline is None else vs_base(value, baseline, share=share)


def _trials_searched(sweep: dict[str, Any]) -> str:
    """"4 trials searched by optuna with asha early stopping"; "1 trial ... without early
    stopping"."""
    n = sweep["num_trials"]
    scheduler = sweep["scheduler"]["type"]
    stopping = "without early stopping" if scheduler == "none" else f"with {scheduler} early stopping"
    return f"{n} trial{'' if n == 1 else 's'} searched by {sweep['algorithm']} {stopping}"


def _eval_description(data: dict[str, Any], baseline: dict[str, Any] | None,
                      metric: str) -> str:
    """Which eval data, and how many examples were SCORED: the task metrics' samples for a
    task metric, the rows the loss was computed on otherwise (not the file's row count: rows
    may be capped by data.max_eval_samples or evaluation.samples, or dropped as too long)."""
    evaluation = data["eval"]
    baseline = baseline or {}
    scored = baseline.get("task_samples" if metric.startswith("task_") else "eval_samples")
    if evaluation.get("held_out_fraction_of_train") is not None:
        where = f"{evaluation['held_out_fraction_of_train']:.0%} held out of the training data"
        return where + (f", {scored} examples scored" if scored else "")
    name = evaluation.get("file") or evaluation.get("hub_id")
    rows = evaluation.get("rows")
    if not scored:
        return f"`{name}`" + (f", {rows} rows" if rows else "")
    return f"`{name}`, {scored} examples scored" + (f" of its {rows} rows" if rows and rows != scored else "")
