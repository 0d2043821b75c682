"""The model behind ``qlora-sweep serve``: one base model, loaded once as the sweep's trials
load it (``trainables.model.load_base_model``: 4-bit as trained), with every served adapter
on it under its own name (PEFT), answering a batch of requests for different adapters in one
``generate`` (PEFT's mixed-adapter batches, ``adapter_names=``).

Prompts are formatted and answers decoded as ``qlora-sweep generate`` does
(``trainables.generate``), so a greedy answer of the server is ``generate``'s answer for the
same adapter and prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass(frozen=True)
class Served:
    """One name the server answers as: an adapter (its folder and training prompt format), or
    the base model (``adapter_dir`` None)."""

    name: str
    adapter_dir: str | None
    source: str
    data_format: str = "prompt_completion"
    prompt_suffix: str = ""


@dataclass
class Job:
    """One request's generation: the prompt's token ids and how to sample."""

    model: str
    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)


@dataclass
class Answer:
    text: str
    finish_reason: str  # "stop" (end of sequence or a stop string) or "length"
    completion_tokens: int
    batch: list[str]  # the models of the batch it was generated in, one per request


class Engine:
    """The base model and its adapters, loaded once."""

    def __init__(self, model_settings: dict[str, Any], served: list[Served]):
        from peft import PeftModel

        from trainables.generate import adapter_tokenizer
        from trainables.model import load_base_model, quiet_transformers

        quiet_transformers()
        self.served = {s.name: s for s in served}
        adapters = [s for s in served if s.adapter_dir is not None]
        self.tokenizer = adapter_tokenizer(model_settings, adapters[0].adapter_dir)
        self.tokenizer.padding_side = "left"  # a batch's answers all start at its last column
        base = load_base_model(model_settings, for_training=False)
        model = PeftModel.from_pretrained(base, adapters[0].adapter_dir,
                                          adapter_name=adapters[0].name, is_trainable=False)
        for adapter in adapters[1:]:
            model.load_adapter(adapter.adapter_dir, adapter_name=adapter.name,
                               is_trainable=False)
        model.eval()
        self.model = model
        config = base.config
        self.context = int(getattr(config, "max_position_embeddings", 0) or
                           getattr(self.tokenizer, "model_max_length", 2048))

    def completion_ids(self, model: str, prompt: str) -> list[int]:
        """A completion prompt's token ids, in the adapter's training prompt format."""
        from trainables.generate import format_prompt

        served = self.served[model]
        text = format_prompt(self.tokenizer, prompt, data_format=served.data_format,
                             prompt_suffix=served.prompt_suffix)
        return self.tokenizer(text, add_special_tokens=served.data_format != "messages"
                              )["input_ids"]

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """A conversation's token ids, through the model's chat template.

        Raises:
            ValueError: the tokenizer has no chat template.
        """
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("this model's tokenizer has no chat template: use /v1/completions")
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                  tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(self, jobs: list[Job]) -> list[Answer]:
        """Answer a batch of jobs; jobs that sample alike (greedy, or one temperature and
        top_p) share one ``generate``, whatever adapters they ask for."""
        answers: list[Answer | None] = [None] * len(jobs)
        groups: dict[tuple[float, float], list[int]] = {}
        for i, job in enumerate(jobs):
            key = (job.temperature, job.top_p) if job.temperature > 0 else (0.0, 1.0)
            groups.setdefault(key, []).append(i)
        batch = [job.model for job in jobs]
        for (temperature, top_p), rows in groups.items():
            for i, answer in zip(rows, self._generate([jobs[i] for i in rows], temperature,
                                                      top_p)):
                answer.batch = batch
                answers[i] = answer
        return answers  # type: ignore[return-value]

    def _generate(self, jobs: list[Job], temperature: float, top_p: float) -> list[Answer]:
        import torch

        tok = self.tokenizer
        width = max(len(job.prompt_ids) for job in jobs)
        ids = torch.full((len(jobs), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, job in enumerate(jobs):
            n = len(job.prompt_ids)
            ids[row, width - n:] = torch.tensor(job.prompt_ids, dtype=torch.long)
            mask[row, width - n:] = 1
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p}
        device = self.model.device
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device),
                adapter_names=[self._adapter(job.model) for job in jobs],
                max_new_tokens=max(job.max_tokens for job in jobs),
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **sampling)
        return [self._answer(job, out[row, width:].tolist()) for row, job in enumerate(jobs)]

    def _adapter(self, model: str) -> str:
        return BASE if self.served[model].adapter_dir is None else model

    def _answer(self, job: Job, new: list[int]) -> Answer:
        eos = self.tokenizer.eos_token_id
        eos_ids = set(eos) if isinstance(eos, list) else {eos}
        new = new[:job.max_tokens]
        ended = next((i for i, t in enumerate(new) if t in eos_ids), None)
        tokens = new if ended is None else new[:ended]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        reason = "stop" if ended is not None else "length"
        cut = [text.find(s) for s in job.stop if s in text]
        if cut:
            text, reason = text[:min(cut)], "stop"
        return Answer(text=text, finish_reason=reason,
                      completion_tokens=len(tokens) + (ended is not None), batch=[])
