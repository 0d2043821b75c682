"""Judge a model by what it generates: greedy, batched generation on eval prompts, scored.

The prompts are the eval rows exactly as the trainer tokenized them (the tokens before the
completion: chat template, instruction format and special tokens included), so the model is
asked what it was trained to answer; the reference is the row's completion. Generation is
greedy, in batches, left-padded, with the KV cache and at most ``max_new_tokens`` new tokens.

``TrialSpec.task_eval`` (built by the sweep from ``evaluation``) holds the scorers and
``samples`` (how many eval rows, drawn once with ``seed``: the same rows for every trial),
``max_new_tokens``, ``batch_size``, ``steps`` (the steps to evaluate at; None: every
evaluation), ``examples`` (how many (prompt, reference, prediction) triples to report),
``search_path`` (folders a custom scorer module is imported from) and ``sources`` (the custom
scorers' module files as the driver read them, written out and searched after
``search_path``, where its folders are missing: ``trainables.scoring.module_sources``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from .early_eval import subset_indices
from .items import ITEMS, record
from .scoring import confusions, load_function, pick_examples, score_all, unpack_sources

EXAMPLES = "task_examples"  # the reported (prompt, reference, prediction) triples, as JSON text
CONFUSION = "task_confusion"  # each label scorer's confusion matrix, as JSON text
SECONDS = "task_seconds"  # time the generation and scoring of one evaluation took


def reference_text(completion, tokenizer) -> str:
    """A row's untruncated completion as text: what its answer is scored against. (TRL keeps
    the ``completion`` column beside the tokens; text completions end with the EOS it added.)"""
    if isinstance(completion, list):  # chat: the assistant's message
        return str(completion[-1]["content"]).strip()
    eos = tokenizer.eos_token
    return (completion.removesuffix(eos) if eos else completion).strip()


def prompts_and_references(dataset, tokenizer, indices: list[int]) -> tuple[list[list[int]], list[str]]:
    """The prompt token ids and the reference text of the tokenized eval rows at ``indices``.

    TRL marks the completion with ``completion_mask`` (or, once it built them, with labels
    that are -100 on the prompt). The reference is the row's completion as written, never its
    tokens cut at ``data.max_length``; only rows tokenized without their text (none that
    this project writes) fall back to decoding the tokens.
    """
    columns = dataset.column_names
    prompts, references = [], []
    for i in indices:
        row = dataset[int(i)]
        ids = list(row["input_ids"])
        if "completion_mask" in columns:
            mask = list(row["completion_mask"])
        elif "labels" in columns:
            mask = [int(label != -100) for label in row["labels"]]
        else:
            raise ValueError("the eval rows mark no completion (no completion_mask or labels); "
                             "task metrics need prompt/completion data")
        start = mask.index(1) if 1 in mask else len(ids)
        prompts.append(ids[:start])
        references.append(reference_text(row["completion"], tokenizer) if "completion" in columns
                          else tokenizer.decode(ids[start:], skip_special_tokens=True).strip())
    return prompts, references


def generate(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: int,
             batch_size: int) -> list[str]:
    """Greedy completions of token-id prompts, in batches (left-padded, KV cache)."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    # Longest prompts first: batches of similar length waste less on padding.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    texts: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        batch = [order[j] for j in range(start, min(start + batch_size, len(order)))]
        width = max(len(prompts[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            if prompts[i]:
                ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]):] = 1
        with torch.no_grad():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 num_beams=1, use_cache=True, pad_token_id=pad,
                                 eos_token_id=tokenizer.eos_token_id)
        for row, i in enumerate(batch):
            texts[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True).strip()
    return texts


class TaskEval:
    """Generates on the eval subset and scores it; what an evaluation adds to its report."""

    def __init__(self, task: dict[str, Any], eval_dataset, tokenizer):
        self.task = task
        self.tokenizer = tokenizer
        indices = subset_indices(len(eval_dataset), int(task.get("samples") or len(eval_dataset)),
                                 int(task.get("seed", 0)))
        self.prompts, self.references = prompts_and_references(eval_dataset, tokenizer, indices)
        steps = task.get("steps")
        self.steps = None if steps is None else {int(s) for s in steps}
        if task.get("sources"):
            # The custom scorers' modules as the driver had them, searched after the driver's
            # folders: used where those folders are missing (another node, another machine).
            shipped = unpack_sources(task["sources"])
            self.task = task = {**task, "search_path": [*(task.get("search_path") or []), shipped]}
        # Custom scorers are imported now, so a module this node lacks fails the trial at its
        # start rather than at its first evaluation (trainables.scoring.ScorerImportError).
        for scorer in task["scorers"]:
            if scorer["type"] == "custom":
                load_function(scorer["function"], task.get("search_path") or ())

    def due(self, step: int, max_steps: int) -> bool:
        """Whether the evaluation at ``step`` generates (cadence ``rungs``: ASHA's rungs and the
        last step only)."""
        return self.steps is None or step in self.steps or step >= max_steps

    def predict(self, model) -> list[str]:
        was_training = model.training
        model.eval()
        try:
            return generate(model, self.tokenizer, self.prompts,
                            max_new_tokens=int(self.task.get("max_new_tokens", 32)),
                            batch_size=int(self.task.get("batch_size", 32)))
        finally:
            if was_training:
                model.train()

    def evaluate(self, model) -> dict[str, Any]:
        """Task metrics of ``model`` on the subset, with a few examples, the per-item values
        (``trainables.items``, under ``task_items``) and the time taken.

        Raises:
            trainables.scoring.ScorerError: a custom scorer failed.
        """
        started = time.monotonic()
        predictions = self.predict(model)
        metrics: dict[str, Any] = score_all(self.task["scorers"], predictions, self.references,
                                            search_path=self.task.get("search_path") or ())
        scorers = self.task["scorers"]
        shown = pick_examples(scorers, predictions, self.references,
                              int(self.task.get("examples", 4)))
        metrics[EXAMPLES] = json.dumps([
            {"prompt": self.tokenizer.decode(self.prompts[i], skip_special_tokens=True),
             "reference": self.references[i], "prediction": predictions[i]} for i in shown])
        matrices = confusions(scorers, predictions, self.references)
        if matrices:  # per-label accuracy for status and the report; a few counts
            metrics[CONFUSION] = json.dumps(matrices)
        # Each item's value, for paired comparisons; a trial writes it beside its checkpoint
        # (trainables/callbacks.py), never into its reports.
        metrics[ITEMS] = record(scorers, predictions, self.references)
        metrics[SECONDS] = time.monotonic() - started
        return metrics

    def missing(self) -> dict[str, float]:
        """NaN for every task metric: the report of an evaluation that did not generate."""
        from .scoring import all_metric_modes

        return {name: float("nan") for name in all_metric_modes(self.task["scorers"])}
