"""Rules that span fields of the sweep config; every broken rule is collected, none asserted."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from search_spaces import SpaceError, merge_space, parse_space
from search_spaces.domains import Domain, encode_choice

from trainables.metrics import SEARCH_VALUE

from .asha import asha_rungs
from .plan import SweepPlan
from .keys import NOT_SEARCHABLE, SEARCHABLE_SECTIONS, searchable_keys, suggest
from .schema import DATA_SUFFIXES, REPORTED_METRICS, SweepConfig


def _misaligned_rungs(cfg: SweepConfig, max_t: int, grace: int) -> list[str]:
    """``evaluation.cadence: rungs`` generates at ASHA's rungs; a rung that is not an
    evaluation step is decided at the next one, where nothing was generated (NaN)."""
    if cfg.evaluation.cadence != "rungs" or cfg.scheduler.type != "asha" or not \
            cfg.evaluation.scorers:
        return []
    every = cfg.training.eval_steps
    rf = cfg.scheduler.reduction_factor
    rungs = asha_rungs(grace, max_t, rf)
    off = [r for r in rungs if not float(r).is_integer() or int(r) % every]
    if not off:
        return []
    fit = grace if grace % every == 0 else (grace // every + 1) * every
    whole = rf if float(rf).is_integer() else max(2, round(rf))
    suggestion = f"scheduler.grace_period: {fit}" + (
        "" if whole == rf else f" and reduction_factor: {whole:g}")
    metric = cfg.search.metric
    harm = ("so the task metrics would be generated at each trial's last step only"
            if metric in REPORTED_METRICS else
            f"so ASHA, ranking on search.metric = {metric}, would never stop a trial")
    return [f"evaluation.cadence = 'rungs' with ASHA's rungs at steps "
            f"{', '.join(f'{r:g}' for r in rungs)} (scheduler.grace_period = {grace}, "
            f"reduction_factor = {rf:g}) and an evaluation every training.eval_steps = {every}: "
            f"{', '.join(f'{r:g}' for r in off)} "
            f"{'is not an evaluation step' if len(off) == 1 else 'are not evaluation steps'}. "
            f"ASHA decides at a trial's first evaluation at or after a rung, where no answer "
            f"was generated (its task metrics are NaN there), {harm}. Fix: put every rung on "
            f"an evaluation step (e.g. {suggestion}), or set evaluation.cadence: every."]


def _early_eval(cfg: SweepConfig, max_t: int, grace: int) -> tuple[int | None, list[str]]:
    """``(first step evaluated on the whole eval set, problems)`` for
    ``scheduler.early_eval_samples``: the last rung where ASHA can stop a trial."""
    samples = cfg.scheduler.early_eval_samples
    if samples is None:
        return None, []
    name = f"scheduler.early_eval_samples = {samples}"
    if cfg.scheduler.type != "asha":
        return None, [f"{name} with scheduler.type = {cfg.scheduler.type!r}: the subset only "
                      f"serves ASHA's early rungs. Fix: remove early_eval_samples, or use "
                      f"scheduler.type: asha."]
    if cfg.search.metric == "train_loss":
        return None, [f"{name} with search.metric = train_loss: the sweep ranks on the training "
                      f"loss, which no evaluation changes. Fix: remove early_eval_samples."]
    problems = []
    if cfg.data.max_eval_samples is not None and samples >= cfg.data.max_eval_samples:
        problems.append(f"{name} is not below data.max_eval_samples = "
                        f"{cfg.data.max_eval_samples}: the subset would be the whole eval set. "
                        f"Fix: use fewer (e.g. {max(1, cfg.data.max_eval_samples // 4)}) or "
                        f"remove early_eval_samples.")
    stopping = [r for r in asha_rungs(grace, max_t, cfg.scheduler.reduction_factor) if r < max_t]
    if not stopping:
        problems.append(f"{name} with scheduler.grace_period = {grace} and max_t = {max_t}: "
                        f"ASHA has no rung before the end, so every evaluation would be on the "
                        f"whole set anyway. Fix: lower grace_period, or remove "
                        f"early_eval_samples.")
        return None, problems
    # ASHA decides at the first report at or after a milestone (67.5: from step 68 on)
    return math.ceil(stopping[-1]), problems


def check_evaluation(cfg: SweepConfig) -> list[str]:
    """The scorers are complete for their type, their metric names unique, and search.metric
    is a metric the sweep reports."""
    problems = []
    names: dict[str, int] = {}
    for i, scorer in enumerate(cfg.evaluation.scorers):
        where = f"evaluation.scorers[{i}]"
        if scorer.type == "custom":
            if not scorer.function or ":" not in scorer.function:
                problems.append(f"{where}.function = {scorer.function!r}: a custom scorer needs "
                                f"'module:function'. Fix: e.g. function: my_scorers:f1 (a file "
                                f"my_scorers.py beside the config).")
            if not scorer.metrics:
                problems.append(f"{where}.metrics is empty: a custom scorer declares the keys it "
                                f"returns, each with min or max. Fix: e.g. metrics: {{f1: max}}.")
        else:
            wrong = [k for k in ("function", "metrics") if getattr(scorer, k) is not None]
            if scorer.type != "number" and scorer.pattern is not None:
                wrong.append("pattern")
            if scorer.type != "label" and scorer.labels is not None:
                wrong.append("labels")
            for key in wrong:
                problems.append(f"{where}.{key}: not used by a scorer of type {scorer.type!r}. "
                                f"Fix: remove it, or set type to the scorer it belongs to.")
        if scorer.type != "custom" or (scorer.function and ":" in scorer.function):
            from trainables.scoring import scorer_name

            name = scorer_name(scorer.model_dump())
            if name in names:
                problems.append(f"{where}: its metrics are named task_{name}... like those of "
                                f"evaluation.scorers[{names[name]}]. Fix: give one of them "
                                f"another name.")
            names[name] = i
    if problems:
        return problems
    return _metric_problems(cfg.search.metric, cfg.evaluation.scorers)


def _metric_problems(metric: str, scorers: list) -> list[str]:
    from .schema import reported_metrics

    reported = reported_metrics(scorers)
    if metric in reported:
        return []
    close = suggest(metric, list(reported))
    hint = f" Did you mean '{close}'?" if close else ""
    fix = ("Fix: use one of them, or add an evaluation scorer that reports it."
           if metric.startswith("task_") and not scorers else "Fix: use one of them.")
    return [f"search.metric = {metric!r}: trials never report this metric; this config's "
            f"trials report {', '.join(reported)}.{hint} {fix}"]


def check_metric_only(data: dict[str, Any]) -> list[str]:
    """The metric's problem when the rest of the config failed to parse (its sections alone)."""
    from .schema import EvaluationSection

    search = data.get("search") if isinstance(data.get("search"), dict) else {}
    metric = search.get("metric")
    if not isinstance(metric, str):
        return []
    try:
        evaluation = EvaluationSection.model_validate(data.get("evaluation") or {})
    except ValidationError:
        return []
    return _metric_problems(metric, evaluation.scorers)


def _parse(raw: dict | str, *, auto: dict | None = None) -> tuple[dict[str, Domain], list[str]]:
    try:
        entries = merge_space({"preset": raw} if isinstance(raw, str) else raw, auto=auto)
        return parse_space(entries), []
    except SpaceError as err:
        return {}, err.problems


def _check_domains(domains: dict[str, Domain], *, existing: bool = False) -> list[str]:
    problems = []
    known = searchable_keys()
    for name, dom in domains.items():
        if name in NOT_SEARCHABLE and existing:
            continue
        if name in NOT_SEARCHABLE:
            problems.append(f"search_space.{name}: a setting a sweep may not search: "
                            f"{NOT_SEARCHABLE[name]}. Searchable: {', '.join(known)}. Fix: "
                            f"remove it from search_space and set it once, under "
                            f"{name.split('.')[0]}:.")
            continue
        if name not in known:
            close = suggest(name, known)
            hint = f" Did you mean '{close}'?" if close else ""
            problems.append(f"search_space.{name}: not a setting that can be searched.{hint} "
                            f"Fix: search a lora.* or training.* setting (the config "
                            f"reference, docs/reference/config.md, lists them).")
            continue
        section, field = name.split(".", 1)
        model = SEARCHABLE_SECTIONS[section]
        if field == "target_modules":
            continue  # group names and module lists are resolved against the model in pre-flight
        for value in dom.candidates():
            try:
                model.model_validate({field: value})
            except ValidationError as err:
                msg = err.errors()[0]["msg"].removeprefix("Value error, ")
                problems.append(f"search_space.{name}: the value {value!r} breaks the rule of "
                                f"{name}: {msg}. Fix: keep every value of the {dom.kind} within "
                                f"that rule.")
    return problems


def check_space_only(raw: dict | str) -> list[str]:
    """Problems of a search space alone (used when the rest of the config failed to parse;
    of ``auto``, only the entries the config writes itself: auto needs a valid model)."""
    domains, problems = _parse(raw, auto={})
    return problems + _check_domains(domains)


def check_rules(cfg: SweepConfig, *, base_dir: Path, existing: bool = False,
                space_unbuilt: bool = False) -> tuple[SweepPlan, list[str]]:
    """Check the rules between fields and derive what the orchestrator needs.

    ``existing``: the config of a sweep that has run (its ``sweep.yaml``, for ``resume`` and
    ``promote``): the rules that keep a NEW sweep from breaking (a searched max_steps or
    eval_steps, max_t below max_steps, rungs off the eval steps) are not applied, so a sweep
    made before them keeps its trials, its resume and its promotion.

    ``space_unbuilt``: ``search_space: auto`` could not be built (a problem already said so),
    so the space holds only the config's own entries: what is checked against the whole space
    (the initial points, an empty space) is left out rather than blamed on it.

    Returns:
        ``(plan, problems)``; the plan holds the parsed search space (``domains``), the
        resolved ASHA bounds, the mode, and absolute data paths.
    """
    domains, problems = _parse(cfg.search_space)
    problems += _check_domains(domains, existing=existing)
    # While the space has a problem, what is checked against it (initial points, an empty
    # space) would only repeat that problem in other words.
    space_ok = not problems and not space_unbuilt

    if "lora.alpha" in domains and "lora.alpha_ratio" in domains:
        problems.append("search_space: lora.alpha and lora.alpha_ratio are both searched, but "
                        "alpha is either given or derived from the ratio. Fix: search one of them.")
    if "lora.alpha_ratio" in domains and cfg.lora.alpha is not None:
        problems.append(f"lora.alpha = {cfg.lora.alpha}: a fixed alpha overrides the searched "
                        f"lora.alpha_ratio. Fix: remove lora.alpha, or search lora.alpha instead.")

    if space_ok and not domains and cfg.search.algorithm != "grid" and cfg.search.num_trials > 1:
        space_ok = False  # starting points cannot be checked against a space that is not there
        problems.append(f"search_space is empty: each of the {cfg.search.num_trials} trials would "
                        f"train exactly the same settings. Fix: search something (e.g. "
                        f"search_space: {{lora.r: {{choice: [8, 16]}}}}, or preset: cpu-demo), "
                        f"or set search.num_trials: 1 for a single training.")
    if cfg.search.algorithm == "grid":
        ranged = [n for n, d in domains.items() if d.kind != "choice"]
        if ranged:
            problems.append(f"search.algorithm = 'grid' needs every search_space entry to be a "
                            f"choice, but {', '.join(ranged)} are ranges. Fix: use choice lists, "
                            f"or search.algorithm: optuna.")
        # An empty grid is the one combination of no settings: a single fixed training.

    for i, point in enumerate(cfg.search.initial_points if space_ok else []):
        missing = [k for k in domains if k not in point]
        if missing:
            problems.append(f"search.initial_points[{i}] gives no value for {', '.join(missing)}; "
                            f"a starting point must set every searched setting. Fix: add "
                            f"{', '.join(f'{k}: <value>' for k in missing)} to it.")
        for key, value in point.items():
            if key not in domains:
                problems.append(f"search.initial_points[{i}].{key}: not a searched setting; "
                                f"searched: {', '.join(domains) or 'none'}. Fix: remove it.")
                continue
            dom = domains[key]
            if dom.kind == "choice" and encode_choice(value) not in dom.values:
                problems.append(f"search.initial_points[{i}].{key} = {value!r}: not one of the "
                                f"choices {list(dom.values)}. Fix: use one of them.")
            elif dom.kind != "choice" and (isinstance(value, bool)
                                           or not isinstance(value, (int, float))):
                problems.append(f"search.initial_points[{i}].{key} = {value!r}: not a number; "
                                f"the space is {dom.describe()}. Fix: give a number in it.")
            elif dom.kind != "choice" and not (dom.low <= float(value) <= dom.high):
                problems.append(f"search.initial_points[{i}].{key} = {value!r}: outside "
                                f"{dom.describe()}. Fix: give a value in that range.")

    max_t = cfg.scheduler.max_t or cfg.training.max_steps
    grace = cfg.scheduler.grace_period or min(cfg.training.eval_steps, max_t)
    if cfg.scheduler.type == "asha":
        if grace > max_t:
            problems.append(f"scheduler.grace_period = {grace} is greater than scheduler.max_t = "
                            f"{max_t}: ASHA could never stop a trial. Fix: set grace_period "
                            f"<= max_t (e.g. {max(1, max_t // 4)}).")
        if max_t > cfg.training.max_steps:
            problems.append(f"scheduler.max_t = {max_t} is greater than training.max_steps = "
                            f"{cfg.training.max_steps}: no trial runs that long. Fix: leave "
                            f"max_t unset or <= max_steps.")
        elif existing:
            pass
        elif max_t < cfg.training.max_steps:
            # Ray's ASHA stops every trial that reaches max_t: each would end before its
            # training (and learning-rate schedule) does, counted as stopped early.
            problems.append(f"scheduler.max_t = {max_t} is below training.max_steps = "
                            f"{cfg.training.max_steps}: ASHA stops every trial at step {max_t}, "
                            f"before its training and learning-rate schedule end, so every "
                            f"trial would be stopped early (and keep only its best checkpoint). "
                            f"Fix: leave scheduler.max_t unset (it follows training.max_steps), "
                            f"or set training.max_steps: {max_t}.")
        elif grace <= max_t:
            problems += _misaligned_rungs(cfg, max_t, grace)

    full_eval_from, early_problems = ((None, []) if grace > max_t
                                      else _early_eval(cfg, max_t, grace))
    problems += early_problems

    problems += check_evaluation(cfg)

    if cfg.resources.accelerator_type and cfg.resources.gpu == 0:
        problems.append(f"resources.accelerator_type = {cfg.resources.accelerator_type!r} with "
                        f"resources.gpu = 0: an accelerator type only constrains GPU trials. "
                        f"Fix: set resources.gpu (e.g. 1), or remove accelerator_type.")
    if cfg.storage.shared and "://" in cfg.storage.path:
        problems.append(f"storage.shared = true with storage.path = {cfg.storage.path!r}: "
                        f"'shared' is for a shared file system path. Fix: remove "
                        f"storage.shared.")

    def local(path: str) -> str:
        p = Path(path).expanduser()
        return str(p if p.is_absolute() else (base_dir / p).resolve())

    for key, src in (("data.train", cfg.data.train), ("data.eval", cfg.data.eval)):
        if src is None:
            continue
        on_disk = Path(local(src.path))
        if on_disk.is_dir():
            problems.append(f"{key} = {src.path!r}: {on_disk} is a folder, not a data file. "
                            f"Fix: name the file in it ({', '.join(DATA_SUFFIXES)}).")
        elif src.is_local and not src.path.lower().endswith(DATA_SUFFIXES):
            problems.append(f"{key} = {src.path!r}: not a file type qlora-sweep reads "
                            f"({', '.join(DATA_SUFFIXES)}). Fix: convert it to JSONL, one "
                            f'{{"prompt": ..., "completion": ...}} object per line.')

    plan = SweepPlan(
        domains=domains, mode=cfg.mode, max_t=max_t, grace_period=grace,
        full_eval_from=full_eval_from,
        rank_key=SEARCH_VALUE if full_eval_from else cfg.search.metric,
        train_path=local(cfg.data.train.path) if cfg.data.train.is_local else None,
        eval_path=(local(cfg.data.eval.path) if cfg.data.eval and cfg.data.eval.is_local
                   else None),
        existing=existing)
    return plan, problems
