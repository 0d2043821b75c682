"""The names of settings: which ones a search space may vary, and the closest known name to
a mistyped one (for "did you mean")."""

from __future__ import annotations

from .schema import LoraSection, TrainingSection

SEARCHABLE_SECTIONS = {"lora": LoraSection, "training": TrainingSection}


# Settings of those sections that a search must hold fixed, with why: ASHA and the searcher
# compare trials step for step, at the same evaluation steps (searching training.seed stays
# allowed: each trial then splits and tokenizes its own data, see run/sweep.py).
NOT_SEARCHABLE = {
    "training.max_steps": "it is every trial's length and ASHA's budget (scheduler.max_t); "
                          "ASHA and the searcher compare trials step for step, so it is one "
                          "value for the whole sweep",
    "training.eval_steps": "trials report, checkpoint and meet ASHA's rungs at their "
                           "evaluation steps, so they must be the same for every trial",
}


def searchable_keys() -> list[str]:
    """Every dotted setting a search space may vary (the allow-list)."""
    return [key for s, model in SEARCHABLE_SECTIONS.items() for f in model.model_fields
            if (key := f"{s}.{f}") not in NOT_SEARCHABLE]


# Names users bring from PEFT, TRL or other tools, mapped to ours (for "did you mean").
SYNONYMS = {"rank": "r", "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout",
            "lr": "learning_rate", "targets": "target_modules", "target": "target_modules",
            "batch_size": "per_device_train_batch_size", "steps": "max_steps",
            "epochs": "max_steps", "num_samples": "num_trials", "trials": "num_trials"}


def suggest(name: str, known: list[str]) -> str | None:
    """The known name closest to ``name`` (synonyms first), or None."""
    import difflib

    prefix, _, last = name.rpartition(".")
    alias = SYNONYMS.get(last)
    if alias:
        candidate = f"{prefix}.{alias}" if prefix else alias
        if candidate in known:
            return candidate
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return close[0]
    # A shortened name (scheduler.grace, storage.keep): the one known name it begins a word of.
    words = [k for k in known if last and any(w.startswith(last) for w in
                                              k.rpartition(".")[2].split("_"))]
    return words[0] if len(words) == 1 else None

