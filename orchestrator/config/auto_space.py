"""``search_space: auto`` in a config: read what the space is built from (the model's
``config.json`` and linear layers, the training rows), build it (:mod:`search_spaces.auto`),
and put it in the config in place of ``preset: auto`` — its entries under ``search_space``,
overridden by the config's own, and its initial points under ``search.initial_points`` unless
the config gives some. So the sweep's ``sweep.yaml`` holds the space that ran, and ``resume``
and ``promote`` read it as any other.

The model is read as pre-flight reads it (``trainables.model``: the builtin model's recipe, a
local folder, or a Hub id, config only, no weights); a local training file is counted, a Hub
dataset is not downloaded for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from search_spaces import AUTO, is_auto
from search_spaces.auto import AutoSpace, DataFacts, build_space, with_entries

from .schema import SweepConfig


def requested(cfg: SweepConfig) -> bool:
    """Whether the config asks for ``search_space: auto``."""
    return is_auto(cfg.search_space)


def resolve(cfg: SweepConfig, *, base_dir: Path) -> tuple[SweepConfig, AutoSpace | None,
                                                           list[str]]:
    """The config with ``auto`` built into it, the space auto chose (with its reasons), and
    the problems that kept it from being built (then the config keeps only its own entries,
    for the other checks to see).
    """
    explicit = {k: v for k, v in cfg.search_space.items() if k != "preset"}
    try:
        auto = _build(cfg, base_dir)
    except _NotBuilt as err:
        return cfg.model_copy(update={"search_space": explicit}), None, [str(err)]
    auto = with_entries(auto, explicit)
    search = cfg.search
    if not search.initial_points:
        search = search.model_copy(update={"initial_points": auto.initial_points})
    resolved = cfg.model_copy(update={"search_space": dict(auto.entries), "search": search})
    return resolved, auto, []


class _NotBuilt(Exception):
    pass


def _build(cfg: SweepConfig, base_dir: Path) -> AutoSpace:
    from trainables.model import linear_module_names, model_config

    model = cfg.model.model_dump()
    name = cfg.model.name_or_path
    try:
        config = model_config(model).to_dict()
        names = linear_module_names(model)
    except Exception as err:  # transformers raises OSError/ValueError/KeyError for bad models
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise _NotBuilt(f"model.name_or_path = {name!r}: search_space: {AUTO} builds the space "
                        f"from the model's config, which could not be loaded ({first}). Fix: "
                        f"give a Hub id or a local folder with the config.json of a causal "
                        f"language model, or list the searched settings under search_space "
                        f"yourself.") from None
    try:
        return build_space(config, names, data_facts(cfg, base_dir),
                           alpha_ratio=cfg.lora.alpha_ratio, alpha=cfg.lora.alpha,
                           num_trials=cfg.search.num_trials)
    except ValueError as err:
        raise _NotBuilt(f"model.name_or_path = {name!r}: search_space: {AUTO} cannot build a "
                        f"space for this model: {err}. Fix: list the searched settings under "
                        f"search_space yourself.") from None


def data_facts(cfg: SweepConfig, base_dir: Path) -> DataFacts:
    """The training rows (a local file, counted; a Hub dataset: not counted) and the examples
    one trial trains on."""
    t = cfg.training
    per_trial = t.max_steps * t.per_device_train_batch_size * t.gradient_accumulation_steps
    return DataFacts(train_rows=_train_rows(cfg, base_dir), examples_per_trial=per_trial,
                     packed=cfg.data.packing)


def _train_rows(cfg: SweepConfig, base_dir: Path) -> int | None:
    from trainables.data import DataError, load_source

    src = cfg.data.train
    if not src.is_local:
        return None
    path = Path(src.path).expanduser()
    path = path if path.is_absolute() else base_dir / path
    try:
        rows = len(load_source({"path": str(path), "local": True, "columns": {}}))
    except DataError:
        return None  # pre-flight says what is wrong with the file
    if cfg.data.eval is None:  # eval_fraction of it is held out
        rows -= max(1, round(rows * cfg.data.eval_fraction))
    return max(rows, 1)


def explain(auto: AutoSpace, domains: dict[str, Any],
            initial_points: list[dict[str, Any]]) -> list[str]:
    """What ``validate`` prints: one line per setting, its space and why, then the fixed
    settings and the initial points the sweep starts from."""
    from search_spaces.domains import short_name

    lines = [f"search space: {AUTO}, built from {auto.summary}"]
    for name, dom in domains.items():
        lines.append(f"  {name}: {dom.describe()} — {auto.reasons.get(name, 'yours')}")
    for name, why in auto.fixed.items():
        lines.append(f"  {name}: {why}")
    whose = "from the prior" if initial_points == auto.initial_points else "yours"
    points = "; ".join(", ".join(f"{short_name(k)} {v}" for k, v in p.items())
                       for p in initial_points)
    lines.append(f"  initial points ({len(initial_points)}, {whose}): {points}")
    return lines
