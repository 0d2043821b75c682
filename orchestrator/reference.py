"""The reference pages generated from the code: the config schema (one table per section) and
the command line (each subcommand's help). Tests fail when the pages in docs/ are stale.

    python -m orchestrator.reference          # rewrite docs/reference/config.md and cli.md
"""

from __future__ import annotations

import shlex
from typing import Any

from pydantic import BaseModel

from .config.schema import SweepConfig


def _type(annotation: Any) -> str:
    import types
    import typing

    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in typing.get_args(annotation))
    text = str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
    text = text.replace("orchestrator.config.schema.DataSource", "source")
    text = text.replace("NoneType", "None")
    text = text.replace("orchestrator.config.schema.Scorer", "scorer")
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
    """The config reference: a table of keys per section."""
    out = []
    for name, field in SweepConfig.model_fields.items():
        out.append(f"## `{name}` — {field.description}\n")
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out.append("| key | type | default | meaning |\n|---|---|---|---|")
            out += _rows(sub, f"{name}.")
        else:
            out.append(f"Type {_type(sub)}, default {_default(field)}.")
        out.append("")
    return "\n".join(out)


CONFIG_PAGE = ("# Config reference\n\nGenerated from the schema (`python -m orchestrator.reference`); "
               "unknown keys are errors. Every key can also be given on the command line as a "
               "dotted override (`training.max_steps=300`).\n\n")
CLI_PAGE = ("# Command line\n\nGenerated from the argument parser (`python -m "
            "orchestrator.reference`). `python -m orchestrator` is the same command as "
            "`qlora-sweep`.\n\n")


def render_cli() -> str:
    """The command line reference: the help of ``qlora-sweep`` and of each subcommand."""
    import argparse
    import functools

    from .cli import _parser

    def helped(parser: argparse.ArgumentParser) -> str:
        parser.formatter_class = functools.partial(argparse.HelpFormatter, width=96)
        return parser.format_help().rstrip()

    parser = _parser()
    out = [f"```text\n{helped(parser)}\n```\n"]
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        out.append(f"## `qlora-sweep {name}`\n\n```text\n{helped(sub)}\n```\n")
    return "\n".join(out)


# (what a user did, the overrides given to `validate` of the demo config): every one must be
# refused; the page shows the message exactly as printed.
CONFIG_MISTAKES = [
    ("a number out of its range", ["training.learning_rate=-1"]),
    ("a value that is not one of the choices", ["scheduler.type=hyper"]),
    ("text where a number goes", ["training.max_steps=abc"]),
    ("a value where a section goes", ["model.quantization=8bit"]),
    ("a misspelt key", ["lora.alpah=16"]),
    ("a key that does not exist", ["training.bf16=true"]),
    ("a searched setting that cannot be searched", ["search_space.lora.nope={choice: [1]}"]),
    ("an empty choice", ["search_space.lora.r={choice: []}"]),
    ("bounds the wrong way round", ["search_space.training.learning_rate={loguniform: [1, 0.1]}"]),
    ("an unknown preset", ["search_space.preset=nope"]),
    ("nothing to search, for several trials", ["search_space={}", "search.num_trials=4"]),
    ("a starting point outside the space", ["search.initial_points=[{lora.r: 7}]"]),
    ("a budget in wall time", ["search.budget=2h"]),
    ("a metric the trials never report", ["search.metric=task_price_mea"]),
    ("ASHA's first rung after its last", ["scheduler.grace_period=1000"]),
    ("a data file of a type that is not read", ["data.train=train.txt"]),
    ("a sweep name with a folder in it", ["storage.name=runs/a"]),
    ("a Hub repo id that is not one", ["promote.repo_id=acme/pricing/v2"]),
    ("a threshold that is not a number", ["promote.min_improvement=a lot"]),
    ("a GPU count below zero", ["resources.gpu=-1"]),
    ("more than one GPU per trial", ["resources.gpu=2"]),
    ("ASHA's last rung before the last step", ["scheduler.max_t=120"]),
    ("answers generated at rungs that are not evaluation steps",
     ["evaluation.cadence=rungs", "scheduler.grace_period=30"]),
    ("a searched setting every trial must share",
     ["search_space.training.max_steps={choice: [120, 240]}"]),
    ("a scorer without what it needs", ["evaluation.scorers=[{type: custom, name: f1}]"]),
    ("an override the shell split at its spaces", ["search_space.lora.r={choice:", "[8,", "16]}"]),
]
ERRORS_PAGE = ("# Config errors, as printed\n\nGenerated (`python -m orchestrator.reference`) by "
               "running `qlora-sweep validate examples/demo_cpu.yaml` with each mistake below "
               "given as a command-line override; the same checks run on the file's own keys "
               "(then each problem starts with `demo_cpu.yaml line N:`), and in `run` and "
               "`resume` before anything starts. Every problem is reported at once; each names "
               "where the value came from, the rule, the value and the fix. The rest of the "
               "errors, by command: [errors and troubleshooting](errors.md).\n\n")


def config_error(overrides: list[str]) -> str:
    """The message ``validate`` prints for the demo config with ``overrides``.

    Raises:
        AssertionError: the config is valid (the catalogue is stale).
    """
    from pathlib import Path

    from .config.loading import load_config
    from .errors import UserError

    demo = Path(__file__).resolve().parent.parent / "examples" / "demo_cpu.yaml"
    try:
        load_config(demo, overrides)
    except UserError as err:
        return err.render().replace(str(demo), "examples/demo_cpu.yaml")
    raise AssertionError(f"{overrides} is valid; the errors catalogue expects a mistake")


def render_errors() -> str:
    out = []
    for what, overrides in CONFIG_MISTAKES:
        if all("=" in a for a in overrides):
            args = " ".join(shlex.quote(a) for a in overrides)
        else:  # the shell-split case: shown as typed, unquoted
            args = " ".join(overrides)
        out.append(f"## {what[0].upper()}{what[1:]}\n\n`qlora-sweep validate "
                   f"examples/demo_cpu.yaml {args}`\n\n```text\n{config_error(overrides)}\n```\n")
    return "\n".join(out)


def pages() -> dict[str, str]:
    """Generated page (path under docs/) -> its text."""
    return {"reference/config.md": CONFIG_PAGE + render().rstrip() + "\n",
            "reference/cli.md": CLI_PAGE + render_cli(),
            "reference/config-errors.md": ERRORS_PAGE + render_errors()}


if __name__ == "__main__":
    from pathlib import Path

    docs = Path(__file__).resolve().parent.parent / "docs"
    for name, text in pages().items():
        (docs / name).write_text(text)
        print(f"wrote docs/{name}")
