"""Read a sweep config: YAML (with line numbers), dotted overrides, validation, all problems at once."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import UserError
from .plan import SweepPlan
from .rules import check_rules
from .schema import SweepConfig, suggest


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


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` overrides with dotted keys; values are parsed as YAML scalars/lists.

    ``search_space.<name>=...`` sets a search-space entry, whose own name is dotted.
    """
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            problems.append(f"override '{item}' is not key=value. Fix: write e.g. "
                            f"search.num_trials=16.")
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        if parts[0] == "search_space" and len(parts) > 1:
            parts = ["search_space", ".".join(parts[1:])]
        node = data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    if problems:
        raise UserError("bad command-line override", problems)
    return data


def _section_at(path: tuple) -> type[BaseModel] | None:
    """The schema model found by following ``path`` from the root (None if it leaves it)."""
    current: Any = SweepConfig
    for part in path:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        ann = field.annotation
        current = next((a for a in getattr(ann, "__args__", (ann,))
                        if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return current


def _known_fields(loc: tuple) -> list[str]:
    """Field names beside the last key of ``loc``."""
    return list(getattr(_section_at(loc[:-1]), "model_fields", {}))


def _describe(loc: tuple) -> str | None:
    field = getattr(_section_at(loc[:-1]), "model_fields", {}).get(loc[-1]) if loc else None
    return field.description if field else None


def format_validation_errors(err: ValidationError, lines: dict[tuple, int],
                             source: str) -> list[str]:
    problems = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p in ("function-after",)))
        dotted = ".".join(str(p) for p in loc)
        line = lines.get(loc)
        at = f"{source} line {line}: " if line else ""
        if e["type"] == "extra_forbidden":
            known = _known_fields(loc)
            close = suggest(str(loc[-1]), known)
            hint = f" Did you mean '{'.'.join(map(str, loc[:-1] + (close,)))}'?" if close else ""
            problems.append(f"{at}{dotted}: unknown key.{hint} Known keys here: "
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
        fix = f" Fix: {dotted} is: {desc}" if desc else ""
        msg = e["msg"].removeprefix("Value error, ")
        problems.append(f"{at}{dotted} = {value!r}: {msg}.{fix}")
    return problems


def load_config(path: str | Path, overrides: list[str] | None = None
                ) -> tuple[SweepConfig, SweepPlan]:
    """Read, override and validate a sweep config, reporting every problem together.

    Returns:
        The validated config and its :class:`SweepPlan` (the parsed search space, ASHA's
        bounds, the mode, absolute data paths, the config file).

    Raises:
        UserError: with every problem found.
    """
    path = Path(path)
    data, lines = read_yaml(path)
    data = apply_overrides(data, list(overrides or []))
    try:
        cfg = SweepConfig.model_validate(data)
    except ValidationError as err:
        problems = format_validation_errors(err, lines, path.name)
        # The search space is checked on its own so its problems show up in the same report.
        raw_space = data.get("search_space")
        if isinstance(raw_space, (dict, str)):
            from .rules import check_space_only

            problems += check_space_only(raw_space)
        from .rules import check_metric_only

        problems += check_metric_only(data)
        raise UserError(f"{path}: {len(problems)} problem(s) in the config", problems) from None
    derived, problems = check_rules(cfg, base_dir=path.resolve().parent)
    if problems:
        raise UserError(f"{path}: {len(problems)} problem(s) in the config", problems)
    return cfg, dataclasses.replace(derived, config_path=str(path.resolve()))
