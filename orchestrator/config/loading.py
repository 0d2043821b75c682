"""Read a sweep config: YAML (with line numbers), dotted overrides, validation, all problems at once."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import UserError
from . import auto_space
from .budget import plan_budget, sized
from .plan import SweepPlan, key_path, locate_problem, source_of
from .rules import check_metric_only, check_rules, check_space_only
from .keys import suggest
from .schema import SweepConfig


def _line_map(text: str) -> tuple[dict[tuple, int], list[str]]:
    """Map each key path in the YAML document to its 1-based line number; and the keys given
    twice in one mapping (YAML keeps the last silently)."""
    lines: dict[tuple, int] = {}
    twice: list[str] = []

    def walk(node, path: tuple):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                k = key.value
                line = key.start_mark.line + 1
                if path + (k,) in lines:
                    dotted = ".".join(str(p) for p in path + (k,))
                    twice.append(f"line {line}: {dotted} is given a second time (first on line "
                                 f"{lines[path + (k,)]}); YAML would keep only the second and "
                                 f"drop the first without a word. Fix: merge the two into one.")
                    continue  # what it holds is not a problem of its own
                lines[path + (k,)] = line
                walk(value, path + (k,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    try:
        walk(yaml.compose(text), ())
    except yaml.YAMLError:
        pass
    return lines, twice


def read_yaml(path: Path) -> tuple[dict, dict[tuple, int]]:
    """Parse a config file; a syntax error names the line and column."""
    if not path.is_file():
        raise UserError(f"config file {path} does not exist. Fix: pass the path of a sweep YAML "
                        f"file, e.g. examples/demo_cpu.yaml.")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        line = text.splitlines()[mark.line] if mark and mark.line < len(text.splitlines()) else ""
        if "\t" in line[:len(line) - len(line.lstrip())] or "'\\t'" in problem:
            raise UserError(f"{path}{where}: a tab in the indentation; YAML indents with spaces "
                            f"only. Fix: replace the tab(s) on that line with spaces.") from None
        raise UserError(f"{path}{where}: not valid YAML ({problem}). Fix: check the indentation "
                        f"and quoting on that line.") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of sections (model, data, "
                        f"lora, ...), got a {type(data).__name__}. Fix: start from "
                        f"examples/demo_cpu.yaml, with each section a key at the left margin.")
    lines, twice = _line_map(text)
    if twice:
        raise UserError(f"{path}: {len(twice)} key(s) given twice", twice)
    return data, lines


def _unbalanced(text: str) -> bool:
    return text.count("{") + text.count("[") > text.count("}") + text.count("]")


def _split_by_the_shell(overrides: list[str], start: int) -> int:
    """How many arguments from ``start`` make one override the shell split at its spaces
    (``a={choice: [8, 16]}`` unquoted arrives as three); 0 when it is not such a case."""
    joined = overrides[start]
    for end in range(start + 1, len(overrides)):
        joined += " " + overrides[end]
        if not _unbalanced(joined):
            try:
                yaml.safe_load(joined.partition("=")[2])
            except yaml.YAMLError:
                return 0
            return end - start + 1
    return 0


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` overrides with dotted keys; values are parsed as YAML scalars/lists.

    ``search_space.<name>=...`` sets a search-space entry, whose own name is dotted.
    """
    problems = []
    i = 0
    while i < len(overrides):
        item = overrides[i]
        key, sep, raw = item.partition("=")
        pieces = _split_by_the_shell(overrides, i) if sep and _unbalanced(raw) else 0
        if pieces:
            whole = " ".join(overrides[i:i + pieces])
            problems.append(f"override {whole} arrived as {pieces} arguments: the shell split "
                            f"it at its spaces. Fix: quote it: '{whole}'.")
            i += pieces
            continue
        i += 1
        if not sep or not key:
            problems.append(f"override '{item}' is not key=value. Fix: write e.g. "
                            f"search.num_trials=16 (quote a value with spaces: "
                            f"'search_space.lora.r={{choice: [8, 16]}}').")
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        parts = key_path(key)
        node = data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    if problems:
        raise UserError("bad command-line override", problems)
    return data


def value_sources(source: str, lines: dict[tuple, int], overrides: list[str]
                  ) -> dict[tuple, str]:
    """Where each key's value came from: ``<file> line N``, or ``command line (key=value)``
    for a value an override set (and everything under it)."""
    where = {path: f"{source} line {line}" for path, line in lines.items()}
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep:
            continue
        path = key_path(key)
        for known in [p for p in where if p[:len(path)] == path]:
            del where[known]
        where[path] = f"command line ({item})"
    return where


def _section_at(path: tuple) -> type[BaseModel] | None:
    """The schema model found by following ``path`` from the root (None if it leaves it)."""
    current: Any = SweepConfig
    for part in path:
        if isinstance(part, int):  # an item of a list section (evaluation.scorers[0])
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        current = _model_in(field.annotation)
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The schema model an annotation holds: itself, or inside ``X | None``, ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _known_fields(loc: tuple) -> list[str]:
    """Field names beside the last key of ``loc``."""
    return list(getattr(_section_at(loc[:-1]), "model_fields", {}))


def _describe(loc: tuple) -> str | None:
    field = getattr(_section_at(loc[:-1]), "model_fields", {}).get(loc[-1]) if loc else None
    return field.description if field else None


_LIMITS = {"greater_than": "greater than", "greater_than_equal": "at least",
           "less_than": "less than", "less_than_equal": "at most"}


def _dotted(loc: tuple) -> str:
    """``evaluation.scorers[0].labels``: keys joined by dots, list items in brackets."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fix(e: dict, loc: tuple) -> str:
    """What to change for one pydantic error, said from its type (not the field's
    description, which says what the setting is, not what to write)."""
    kind, ctx = e["type"], e.get("ctx") or {}
    dotted = _dotted(loc)
    if kind in _LIMITS:
        limit = next(iter(ctx.values()), "?")
        return f"set {dotted} to a number {_LIMITS[kind]} {limit}."
    if kind == "literal_error":
        return f"set {dotted} to {ctx.get('expected', 'one of the values above')}."
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"write a whole number for {dotted}, without quotes or a decimal point."
    if kind in ("float_parsing", "float_type"):
        return f"write a number for {dotted}, e.g. 0.0002 or 2e-4."
    if kind in ("bool_parsing", "bool_type"):
        return f"write true or false for {dotted}."
    if kind in ("string_type",):
        return f"write text for {dotted}; quote it if YAML reads it as a number or a list."
    if kind in ("list_type", "tuple_type"):
        return f"write a list for {dotted}, e.g. [a, b]."
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        known = _known_fields(loc + ("",))
        keys = f" ({', '.join(known)})" if known else ""
        return f"write {dotted} as a mapping of keys{keys}, one per line under it."
    desc = _describe(loc)
    return f"change {dotted} ({desc.rstrip('.')})." if desc else f"change {dotted}."


def format_validation_errors(err: ValidationError, where: dict[tuple, str],
                             source: str) -> list[str]:
    """One line per pydantic error: where the value came from (a line of ``source``, or the
    command line), the rule, the value and a fix."""
    problems = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p in ("function-after",)))
        dotted = _dotted(loc)
        origin = source_of(loc, where)
        at = f"{origin}: " if origin else ""
        if e["type"] == "extra_forbidden":
            known = _known_fields(loc)
            close = suggest(str(loc[-1]), known)
            near = _dotted(loc[:-1] + (close,)) if close else None
            fix = (f"Did you mean '{near}'? Fix: rename it to {near}" if near
                   else "Fix: remove it, or use one of the keys known here")
            problems.append(f"{at}{dotted}: unknown key. {fix}; known keys here: "
                            f"{', '.join(known)}.")
            continue
        desc = _describe(loc)
        if e["type"] == "missing":
            examples = {"data": "data: {train: data/train.jsonl}",
                        "data.train": "train: data/train.jsonl under data:"}
            what = f" ({desc.rstrip('.')})" if desc else ""
            problems.append(f"{source}: {dotted} is required and not given{what}. Fix: add "
                            f"{examples.get(dotted, dotted + ': <value>')}.")
            continue
        value = e.get("input")
        msg = e["msg"].removeprefix("Value error, ").rstrip(".")
        fix = "" if "Fix:" in msg else f" Fix: {_fix(e, loc)}"
        problems.append(f"{at}{dotted} = {value!r}: {msg}.{fix}")
    return problems


def load_config(path: str | Path, overrides: list[str] | None = None, *,
                existing: bool = False) -> tuple[SweepConfig, SweepPlan]:
    """Read, override and validate a sweep config, reporting every problem together.

    Returns:
        The validated config (``search.num_trials`` sized to ``search.budget`` when only the
        budget is given) and its :class:`SweepPlan` (the parsed search space, ASHA's bounds,
        the mode, absolute data paths, the config file, what the budget pays for).

    Raises:
        UserError: with every problem found.
    """
    path = Path(path)
    data, lines = read_yaml(path)
    overrides = list(overrides or [])
    data = apply_overrides(data, overrides)
    where = value_sources(path.name, lines, overrides)
    try:
        cfg = SweepConfig.model_validate(data)
    except ValidationError as err:
        problems = format_validation_errors(err, where, path.name)
        # The search space is checked on its own so its problems show up in the same report.
        raw_space = data.get("search_space")
        if isinstance(raw_space, (dict, str)):
            problems += [locate_problem(p, where) for p in check_space_only(raw_space)]
        problems += [locate_problem(p, where) for p in check_metric_only(data)]
        raise UserError(f"{path}: {len(problems)} problem(s) in the config", problems) from None
    budget = plan_budget(cfg)
    cfg = sized(cfg, budget)  # search.num_trials from search.budget, when not given
    auto, problems = None, []
    if auto_space.requested(cfg):  # built from the model and data, then checked as any space
        cfg, auto, problems = auto_space.resolve(cfg, base_dir=path.resolve().parent)
    derived, more = check_rules(cfg, base_dir=path.resolve().parent, existing=existing,
                                space_unbuilt=bool(problems))
    problems += more
    if problems:
        problems = [locate_problem(p, where) for p in problems]
        raise UserError(f"{path}: {len(problems)} problem(s) in the config", problems)
    return cfg, dataclasses.replace(derived, config_path=str(path.resolve()), sources=where,
                                    auto_space=auto, budget=budget)
