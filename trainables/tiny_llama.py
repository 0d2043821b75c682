"""``builtin:tiny-llama``: a small Llama-architecture causal LM built on this machine.

No model can be downloaded where qlora-sweep is developed and tested, and a random model makes
a demo of noise. So the builtin model is built locally and deterministically: a byte-level BPE
tokenizer (one token per digit) is trained on a synthetic corpus, then a few-million-parameter
Llama is briefly pre-trained on the same corpus. The corpus is generic text plus what things
cost, as a real LLM knows it from pre-training: price statements for the demo's training item
combinations only (``price_corpus``), so the demo's held-out eval items stay unseen. The result is saved with ``save_pretrained`` and is
loaded by the ordinary ``from_pretrained`` path like any other local model.

The build is cached on disk under a folder keyed by a hash of the recipe, so changing the
recipe builds a new model and never silently reuses an old one. Concurrent builders (several
trials on one node) serialise on a file lock; the folder appears atomically when complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
NAME = "tiny-llama"

# Everything that determines the built model. Changing any value changes the cache key.
RECIPE: dict = {
    "version": 2,
    "seed": 1234,
    "corpus_lines": 24000,
    # What things cost (``price_corpus``): statements and price lists for the demo's training
    # item combinations, generic material/quality factor statements; one token per digit.
    "price_lines": 24000,
    "factor_share": 0.1,
    "list_share": 0.25,
    "split_digits": True,
    "vocab_size": 2048,
    "hidden_size": 192,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 6,
    "num_key_value_heads": 3,
    "max_position_embeddings": 512,
    "pretrain_steps": 600,
    "pretrain_batch_size": 16,
    "pretrain_seq_len": 128,
    "pretrain_lr": 3e-3,
}

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>"]


def is_builtin(name_or_path: str) -> bool:
    """Whether a model reference names a builtin model (``builtin:...``)."""
    return name_or_path.startswith(BUILTIN_PREFIX)


def recipe_key(recipe: dict | None = None) -> str:
    """A short stable hash of the recipe, used as the cache folder name."""
    r = recipe or RECIPE
    keyed: dict = r
    if r.get("price_lines"):  # the corpus follows the price rule: a new rule, a new model
        from .pricing_rule import fingerprint

        keyed = {**r, "price_rule": fingerprint()}
    blob = json.dumps(keyed, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def cache_root() -> Path:
    """Where builtin models are cached (``QLORA_SWEEP_CACHE`` or ``~/.cache/qlora-sweep``)."""
    root = os.environ.get("QLORA_SWEEP_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "qlora-sweep"
    )
    return Path(root)


def model_dir(recipe: dict | None = None) -> Path:
    """The cache folder the builtin model with this recipe lives (or will live) in."""
    return cache_root() / f"{NAME}-{recipe_key(recipe)}"


def llama_config(recipe: dict | None = None):
    """The model's ``LlamaConfig``, without building anything (used by pre-flight checks)."""
    from transformers import LlamaConfig

    r = recipe or RECIPE
    return LlamaConfig(
        vocab_size=r["vocab_size"],
        hidden_size=r["hidden_size"],
        intermediate_size=r["intermediate_size"],
        num_hidden_layers=r["num_hidden_layers"],
        num_attention_heads=r["num_attention_heads"],
        num_key_value_heads=r["num_key_value_heads"],
        max_position_embeddings=r["max_position_embeddings"],
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


# --------------------------------------------------------------------------- corpus

_OBJECTS = [
    "desk", "chair", "lamp", "shelf", "table", "cabinet", "bench", "stool", "mirror", "rug",
    "sofa", "bed", "clock", "vase", "basket", "kettle", "pan", "knife", "cup", "bowl",
    "bottle", "box", "bag", "coat", "shoe", "hat", "book", "pen", "phone", "radio",
]
_MATERIALS = [
    "steel", "oak", "pine", "plastic", "glass", "bamboo", "walnut", "aluminum", "leather",
    "cotton", "wool", "ceramic", "copper", "paper", "stone", "rubber",
]
_COLOURS = ["red", "blue", "green", "black", "white", "grey", "yellow", "brown", "pink"]
_ADJ = ["small", "large", "old", "new", "light", "heavy", "cheap", "fine", "simple", "modern"]
_VERBS = ["bought", "sold", "found", "moved", "cleaned", "painted", "fixed", "ordered"]
_PEOPLE = ["Anna", "Ben", "Carla", "David", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jon"]
_PLACES = ["the shop", "the market", "the kitchen", "the office", "the garden", "the store"]


def synthetic_corpus(lines: int, seed: int, priced: frozenset[str] = frozenset()) -> list[str]:
    """Generic synthetic English: objects, materials, numbers, prices, questions and answers.

    It teaches the model the vocabulary, digits and the shape of short question/answer text,
    not any particular task, so fine-tuning has something to adapt. Random prices are only
    given to objects outside ``priced`` (whose prices ``price_corpus`` states by their rule).
    """
    rng = random.Random(seed)
    unpriced = [o for o in _OBJECTS if o not in priced]

    def money() -> str:
        return f"${rng.randint(1, 999)}.{rng.randint(0, 99):02d}"

    templates: list[Callable[[], str]] = [
        lambda: f"{rng.choice(_PEOPLE)} {rng.choice(_VERBS)} a {rng.choice(_ADJ)} "
        f"{rng.choice(_MATERIALS)} {rng.choice(_OBJECTS)} at {rng.choice(_PLACES)}.",
        lambda: f"The {rng.choice(_COLOURS)} {rng.choice(_OBJECTS)} is made of "
        f"{rng.choice(_MATERIALS)}.",
        lambda: f"A {rng.choice(_MATERIALS)} {rng.choice(unpriced)} costs {money()}.",
        lambda: f"{rng.randint(0, 99)} plus {rng.randint(0, 99)} is a number.",
        lambda: (lambda a, b: f"{a} and {b} make {a + b}.")(rng.randint(0, 50), rng.randint(0, 50)),
        lambda: f"Question: what is the {rng.choice(_OBJECTS)} made of?\n"
        f"Answer: it is made of {rng.choice(_MATERIALS)}.",
        lambda: f"Question: where is {rng.choice(_PEOPLE)}?\nAnswer: at {rng.choice(_PLACES)}.",
        lambda: f"The {rng.choice(_ADJ)} {rng.choice(_OBJECTS)} was rated {rng.randint(1, 5)} "
        f"of 5 by {rng.choice(_PEOPLE)}.",
        lambda: f"Total: {money()}. Thank you for shopping at {rng.choice(_PLACES)}.",
        lambda: f"<|user|>\nTell me about the {rng.choice(_OBJECTS)}.</s>\n<|assistant|>\n"
        f"It is {rng.choice(_ADJ)} and {rng.choice(_COLOURS)}.</s>",
    ]
    return [rng.choice(templates)() for _ in range(lines)]


def price_corpus(lines: int, seed: int, factor_share: float = 0.1,
                 list_share: float = 0.0) -> list[str]:
    """What things cost, as a pre-trained LLM knows it: price statements in many phrasings
    (never the demo task's own prompt) for the demo's TRAINING item combinations only, plus
    generic statements of how material and quality change a price.

    The held-out eval combinations of the demo (``pricing_rule.split``) appear nowhere here, so
    the demo's eval measures how well the fine-tuned model generalises to unseen items.
    """
    from . import pricing_rule as rule

    rng = random.Random(seed + 1)
    train_combos, _held_out = rule.split()
    train_set = set(train_combos)

    def item() -> tuple[str, str, int, str]:
        c, m, q = rng.choice(train_combos)
        return c, m, q, rule.money(rule.price(c, m, q))

    def statement() -> str:
        c, m, q, p = item()
        a = rule.article(m).lower()
        return rng.choice([
            f"{rng.choice(_PEOPLE)} bought {a} {m} {c} of quality {q} for {p}.",
            f"The {m} {c} with quality {q} sold for {p}.",
            f"{rule.article(m)} {m} {c} rated {q} out of 5 has a price of {p}.",
            f"Receipt: one {m} {c}, quality {q}. Total: {p}.",
            f"{rule.article(m)} {m} {c} of quality {q} costs {p} at {rng.choice(_PLACES)}.",
        ])

    def price_list() -> str:
        # One item at the qualities (or in the materials) that are priced in training.
        c, m, q, _p = item()
        if rng.random() < 0.5:
            known = [k for k in rule.QUALITIES if (c, m, k) in train_set]
            body = ", ".join(f"quality {k} {rule.money(rule.price(c, m, k))}" for k in known)
            return f"Price list for {m} {c}s: {body}."
        known = [k for k in rule.MATERIALS if (c, k, q) in train_set]
        body = ", ".join(f"{k} {rule.money(rule.price(c, k, q))}" for k in known)
        return f"Price list for {c}s of quality {q}: {body}."

    def factor() -> str:
        if rng.random() < 0.6:
            m1, m2 = rng.sample(list(rule.MATERIALS), 2)
            ratio = rule.MATERIALS[m1] / rule.MATERIALS[m2]
            return f"Things made of {m1} cost {ratio:.2f} times as much as things made of {m2}."
        q1, q2 = rng.sample(list(rule.QUALITIES), 2)
        ratio = rule.quality_factor(q1) / rule.quality_factor(q2)
        return f"Quality {q1} costs {ratio:.2f} times as much as quality {q2}."

    def line() -> str:
        x = rng.random()
        if x < factor_share:
            return factor()
        return price_list() if x < factor_share + list_share else statement()

    return [line() for _ in range(lines)]


# --------------------------------------------------------------------------- build


def _train_tokenizer(corpus: list[str], vocab_size: int, split_digits: bool = False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    # One token per digit (as Llama's tokenizer does): numbers are written digit by digit, so
    # a price's magnitude and leading digits can be learnt, not one arbitrary token per number.
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                  byte_level]) if split_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=SPECIAL_TOKENS[4:],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = RECIPE["max_position_embeddings"]
    return fast


def _pretrain(model, tokenizer, corpus: list[str], recipe: dict):
    import torch

    ids: list[int] = []
    for line in corpus:
        ids.extend(tokenizer(line + "</s>", add_special_tokens=False)["input_ids"])
    seq = recipe["pretrain_seq_len"]
    n_chunks = len(ids) // seq
    data = torch.tensor(ids[: n_chunks * seq]).view(n_chunks, seq)
    gen = torch.Generator().manual_seed(recipe["seed"])
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["pretrain_lr"], weight_decay=0.01)
    steps = recipe["pretrain_steps"]
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    started = time.monotonic()
    for step in range(steps):
        batch = data[torch.randint(0, n_chunks, (recipe["pretrain_batch_size"],), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % 100 == 0 or step + 1 == steps:
            log.info(
                     f"  pre-training {step + 1}/{steps}  loss {loss.item():.3f}  "
                     f"({time.monotonic() - started:.0f}s)"
            )
    model.eval()
    return float(loss.item())


def _corpus(r: dict) -> list[str]:
    """The pre-training corpus of the recipe (the tokenizer is trained on it too)."""
    priced = frozenset()
    if r.get("price_lines"):
        from .pricing_rule import CATEGORIES

        priced = frozenset(CATEGORIES)
    corpus = synthetic_corpus(r["corpus_lines"], r["seed"], priced)
    if r.get("price_lines"):
        corpus += price_corpus(r["price_lines"], r["seed"], r.get("factor_share", 0.1),
                               r.get("list_share", 0.0))
        random.Random(r["seed"]).shuffle(corpus)
    return corpus


def tokenizer(recipe: dict | None = None):
    """The builtin model's tokenizer: the built model's, or, before the model is built, the
    same tokenizer trained alone from the recipe (about 1.5 s, where the whole build takes
    minutes), so pre-flight can count tokens before the first run."""
    dest = model_dir(recipe)
    if (dest / "config.json").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(dest)
    key = recipe_key(recipe)
    if key not in _TOKENIZERS:  # once per process (validate in tests, a resumed check)
        r = recipe or RECIPE
        _TOKENIZERS[key] = _train_tokenizer(_corpus(r), r["vocab_size"],
                                            bool(r.get("split_digits")))
    return _TOKENIZERS[key]


_TOKENIZERS: dict = {}  # recipe key -> the tokenizer trained alone (read only)


def build(dest: Path, recipe: dict | None = None) -> None:
    """Build the builtin model from its recipe into ``dest`` (which must not exist)."""
    import torch
    import transformers
    from transformers import LlamaForCausalLM

    transformers.utils.logging.disable_progress_bar()
    started = time.monotonic()
    r = recipe or RECIPE
    torch.manual_seed(r["seed"])
    corpus = _corpus(r)
    log.info(f"building builtin:{NAME} (recipe {recipe_key(r)}): training the tokenizer")
    tokenizer = _train_tokenizer(corpus, r["vocab_size"], bool(r.get("split_digits")))
    model = LlamaForCausalLM(llama_config(r))
    n_params = sum(p.numel() for p in model.parameters())
    log.info(f"  {n_params / 1e6:.2f}M parameters; pre-training on {len(corpus)} synthetic lines")
    final_loss = _pretrain(model, tokenizer, corpus, r)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    (dest / "qlora_sweep_recipe.json").write_text(
        json.dumps({"recipe": r, "parameters": n_params, "final_pretrain_loss": final_loss,
                    "build_seconds": round(time.monotonic() - started, 1)}, indent=2)
    )


def ensure_built(recipe: dict | None = None) -> Path:
    """Return the folder of the builtin model, building it first when it is not cached."""
    dest = model_dir(recipe)
    if (dest / "config.json").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (dest / "config.json").exists():  # built by another process while we waited
                return dest
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
            try:
                started = time.monotonic()
                build(tmp, recipe)
                os.replace(tmp, dest)
                log.info(f"built builtin:{NAME} in {time.monotonic() - started:.0f}s -> {dest}")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return dest


def resolve(name_or_path: str) -> str:
    """Turn a model reference into something ``from_pretrained`` accepts."""
    if not is_builtin(name_or_path):
        return name_or_path
    if name_or_path != BUILTIN_PREFIX + NAME:
        raise ValueError(f"unknown builtin model {name_or_path!r}; the one builtin is "
                         f"'{BUILTIN_PREFIX}{NAME}'")
    return str(ensure_built())
