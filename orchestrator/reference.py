"""Render the config reference (README) from the schema: one table per section.

    python -m orchestrator.reference
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .config import SweepConfig


def _type(annotation: Any) -> str:
    import types
    import typing

    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in typing.get_args(annotation))
    text = str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
    text = text.replace("orchestrator.config.DataSource", "source").replace("NoneType", "None")
    text = text.replace("orchestrator.config.Scorer", "scorer")
    if text.startswith("Literal["):
        text = "one of " + text.removeprefix("Literal[").removesuffix("]")
    return text.replace(" | ", " or ")


def _list_of_sections(annotation: Any) -> type[BaseModel] | None:
    import typing

    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item
    return None


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(section)"
        return f"`{value!r}`"
    if field.is_required():
        return "required"
    return f"`{field.default!r}`"


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = field.annotation if isinstance(field.annotation, type) else None
        if sub is not None and issubclass(sub, BaseModel):
            rows += _rows(sub, f"{key}.")
            continue
        item = _list_of_sections(field.annotation)
        rows.append(f"| `{key}` | {_type(field.annotation)} | {_default(field)} | "
                    f"{field.description or ''} |")
        if item is not None:  # each entry's keys: scorers[].type, ...
            rows += _rows(item, f"{key}[].")
    return rows


def render() -> str:
    out = []
    for name, field in SweepConfig.model_fields.items():
        out.append(f"#### `{name}` — {field.description}\n")
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out.append("| key | type | default | meaning |\n|---|---|---|---|")
            out += _rows(sub, f"{name}.")
        else:
            out.append(f"Type {_type(sub)}, default {_default(field)}.")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render())
