"""Resolve LoRA target-module groups against a model's own linear-module names.

Users search over group names (``attention``, ``mlp``, ``all-linear``) or explicit module lists;
what each group means depends on the architecture: Llama/Mistral/Qwen2/Gemma call their layers
``q_proj … down_proj``, GPT-2 ``c_attn``/``c_proj``/``c_fc`` (with ``c_proj`` in both attention
and MLP), GPT-NeoX ``query_key_value``/``dense…``, Phi ``qkv_proj``/``fc1``. Rather than a
table per architecture, a layer is classed by the path it sits under (``self_attn``,
``attention``, ``attn`` vs ``mlp``, ``feed_forward``…), which also covers architectures we have
never seen. The output head is never a target. Pure Python: the caller supplies the names.
"""

from __future__ import annotations

from collections import defaultdict

GROUPS = ("attention", "mlp", "all-linear")
_ATTENTION_PARTS = {"attn", "attention", "self_attn", "self_attention", "cross_attn",
                    "cross_attention", "mixer"}
_MLP_PARTS = {"mlp", "feed_forward", "ffn", "ff", "feedforward", "block_sparse_moe", "moe"}
OUTPUT_HEADS = {"lm_head", "embed_out", "output", "score", "classifier"}


class TargetError(ValueError):
    """A target-module group or list that matches nothing in the model."""


def _kind(path: list[str]) -> str | None:
    for part in reversed(path[:-1]):
        if part in _ATTENTION_PARTS:
            return "attention"
        if part in _MLP_PARTS:
            return "mlp"
    return None


def resolve_groups(linear_names: list[str]) -> dict[str, list[str]]:
    """Map each group to the PEFT ``target_modules`` suffixes that select exactly its layers.

    A leaf name used by one kind only (``q_proj``) is kept as is; a leaf used by both kinds
    (GPT-2's ``c_proj``) is qualified with its parent (``attn.c_proj`` / ``mlp.c_proj``).
    """
    body = [n for n in linear_names if n.split(".")[-1] not in OUTPUT_HEADS]
    kinds_of_leaf: dict[str, set] = defaultdict(set)
    entries: list[tuple[str | None, str, str]] = []
    for name in body:
        path = name.split(".")
        kind = _kind(path)
        leaf = path[-1]
        parent = path[-2] if len(path) > 1 else ""
        kinds_of_leaf[leaf].add(kind)
        entries.append((kind, leaf, parent))
    groups: dict[str, list[str]] = {g: [] for g in GROUPS}
    for kind, leaf, parent in entries:
        target = leaf if len(kinds_of_leaf[leaf]) == 1 else f"{parent}.{leaf}"
        if kind in ("attention", "mlp") and target not in groups[kind]:
            groups[kind].append(target)
        if target not in groups["all-linear"]:
            groups["all-linear"].append(target)
    return groups


def resolve_target(choice: str | list[str], linear_names: list[str],
                   groups: dict[str, list[str]] | None = None) -> list[str]:
    """Resolve one ``lora.target_modules`` value (a group name, ``a+b``, or a list) to suffixes.

    Raises:
        TargetError: the group is empty for this model, or a listed module matches no layer;
            the message lists the linear layers the model has.
    """
    groups = groups or resolve_groups(linear_names)
    available = sorted({n.split(".")[-1] for n in linear_names
                        if n.split(".")[-1] not in OUTPUT_HEADS})
    if isinstance(choice, str) and choice in groups:
        if not groups[choice]:
            raise TargetError(
                f"the target group '{choice}' matches no linear layer of this model; "
                f"its linear layers are: {', '.join(available)}. Fix: use another group "
                f"({', '.join(g for g in GROUPS if groups[g])}) or list module names."
            )
        return list(groups[choice])
    names = choice.split("+") if isinstance(choice, str) else list(choice)
    missing = [m for m in names
               if not any(n == m or n.endswith("." + m) for n in linear_names)]
    if missing:
        raise TargetError(
            f"target module(s) {', '.join(missing)} match no linear layer of this model; "
            f"its linear layers are: {', '.join(available)}; groups: {', '.join(GROUPS)}. "
            f"Fix: pick names from that list or use a group."
        )
    return names
