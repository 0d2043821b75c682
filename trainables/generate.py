"""Generation with a saved adapter on its base model, in the prompt format used for training.

This is ``qlora-sweep generate``: the quickest way to see what a promoted adapter does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
# In every checkpoint: how its training prompts looked, so ``generate`` asks the same way.
PROMPT_FORMAT = "prompt_format.json"


def prompt_suffix(prompts: list[str]) -> str:
    """The trailing whitespace every training prompt ends with (``generate`` adds it too)."""
    tails = {p[len(p.rstrip()):] for p in prompts if isinstance(p, str)}
    return tails.pop() if len(tails) == 1 else ""


def format_prompt(tokenizer, prompt: str, *, data_format: str, prompt_suffix: str = "") -> str:
    """The text the model saw before each completion during training, for a new prompt."""
    from .data import instruction_prompt

    if data_format == "messages":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the adapter was trained on chat messages but its tokenizer has no "
                             "chat template")
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                             add_generation_prompt=True, tokenize=False)
    if data_format == "instruction":
        return instruction_prompt(prompt)
    return prompt if prompt.endswith(prompt_suffix) else prompt + prompt_suffix


def adapter_tokenizer(model_settings: dict[str, Any], adapter_dir: str | os.PathLike):
    """The tokenizer saved with the adapter (as trained, chat template included), else the base
    model's; a missing pad token is the end-of-sequence token."""
    from transformers import AutoTokenizer

    from .model import load_tokenizer

    adapter_dir = Path(adapter_dir)
    if any((adapter_dir / f).is_file() for f in TOKENIZER_FILES):
        tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
    return load_tokenizer(model_settings)


def generate(model_settings: dict[str, Any], adapter_dir: str | os.PathLike,
             prompts: list[str], *, data_format: str = "prompt_completion",
             prompt_suffix: str = "", max_new_tokens: int = 64) -> list[str]:
    """Load the base model and the adapter once, complete each prompt greedily, return the new
    texts in order."""
    import torch
    from peft import PeftModel

    from .model import load_base_model, quiet_transformers

    quiet_transformers()
    adapter_dir = Path(adapter_dir)
    tokenizer = adapter_tokenizer(model_settings, adapter_dir)
    base = load_base_model(model_settings, for_training=False)
    model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
    model.eval()
    answers = []
    for prompt in prompts:
        text = format_prompt(tokenizer, prompt, data_format=data_format,
                             prompt_suffix=prompt_suffix)
        inputs = tokenizer(text, return_tensors="pt",
                           add_special_tokens=data_format != "messages").to(model.device)
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id,
                                    eos_token_id=tokenizer.eos_token_id)
        answers.append(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:],
                                        skip_special_tokens=True))
    return answers
