"""What ``qlora-sweep serve`` serves: each adapter found and checked before Ray starts (a sweep
dir's winner, a promoted bundle, a checkpoint folder or a Hub repo, safetensors only), all on
one base model."""

from __future__ import annotations

import os
import re
from typing import Any

from ..errors import UserError
from ..promotion.generation import adapter_base, locate_adapter
from .engine import Served

BASE_NAME = "base"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


def parse_adapter_args(values: list[str]) -> list[tuple[str, str]]:
    """``--adapter NAME=SOURCE`` values as ``(name, source)``.

    Raises:
        UserError: a value without ``=``.
    """
    out = []
    for value in values:
        name, sep, source = value.partition("=")
        if not sep or not name or not source:
            raise UserError(f"--adapter {value}: expected NAME=SOURCE, e.g. --adapter "
                            f"challenger=sweeps/other-sweep. Fix: name the adapter, then '=', "
                            f"then its sweep dir, bundle, checkpoint folder or Hub repo.")
        out.append((name, source))
    return out


def _same_model(name: str) -> str:
    """A base model reference, comparable across adapters (a bundle names the builtin model
    ``builtin:tiny-llama``, a checkpoint by its cache folder; a local folder by its real path)."""
    from trainables import tiny_llama

    try:
        resolved = tiny_llama.model_dir() if tiny_llama.is_builtin(name) else name
    except ValueError:
        return name
    return os.path.realpath(resolved) if os.path.exists(resolved) else str(resolved)


def resolve_served(adapters: list[tuple[str, str]], *,
                   allow_pickle: bool = False) -> tuple[dict[str, Any], list[Served]]:
    """The base model's settings and what is served: the base model as ``base``, then each
    adapter under its name, in the order given.

    Raises:
        UserError: a bad or repeated name, a source that is not an adapter (or only a pickle),
            or adapters for different base models.
    """
    seen = {BASE_NAME}
    served = [Served(name=BASE_NAME, adapter_dir=None, source="")]
    model: dict[str, Any] | None = None
    first = ""
    for name, source in adapters:
        if not _NAME.fullmatch(name):
            raise UserError(f"adapter name {name!r}: use letters, digits and . _ : - only "
                            f"(it is the request's 'model'). Fix: e.g. champion, challenger.")
        if name in seen:
            raise UserError(f"adapter name {name!r} is used twice (the base model is "
                            f"{BASE_NAME!r}). Fix: give each adapter its own name.")
        seen.add(name)
        folder = locate_adapter(source, allow_pickle=allow_pickle)
        settings, fmt = adapter_base(folder)
        if model is None:
            model, first = settings, source
        elif _same_model(settings["name_or_path"]) != _same_model(model["name_or_path"]):
            raise UserError(
                f"--adapter {name}={source}: it was trained on {settings['name_or_path']}, but "
                f"{first} on {model['name_or_path']}; the adapters of one server share one base "
                f"model. Fix: serve adapters of the same base model together (one server per "
                f"base model).")
        served.append(Served(name=name, adapter_dir=str(folder), source=source, **fmt))
    if model is None:
        raise UserError("serve: no adapter. Fix: give a sweep dir, promoted bundle, checkpoint "
                        "folder or Hub repo.")
    base_format = served[1]
    # The base model is asked as the first adapter is: in its training prompt format.
    served[0] = Served(name=BASE_NAME, adapter_dir=None, source=model["name_or_path"],
                       data_format=base_format.data_format,
                       prompt_suffix=base_format.prompt_suffix)
    return model, served
