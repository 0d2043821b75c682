"""Search-space presets (YAML files in this folder) and their pure loader.

``load_preset(name)`` reads ``<name>.yaml``; ``search_spaces.domains`` parses entries and turns
them into Ray Tune domains; ``search_spaces.targets`` resolves LoRA target-module groups. The
preset ``auto`` is no file: ``search_spaces.auto`` builds it from the model and the data (the
caller reads those), with ``search_spaces.lr_rule``'s calibrated learning rate. No torch, and no
I/O beyond reading these YAML files.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .domains import Domain, SpaceError, parse_space

PRESET_DIR = Path(__file__).parent
AUTO = "auto"  # the preset built from the model and the data (search_spaces.auto)


def list_presets() -> list[str]:
    """Names of the presets: the shipped files and ``auto``."""
    return sorted([p.stem for p in PRESET_DIR.glob("*.yaml")] + [AUTO])


def load_preset(name: str) -> dict:
    """The raw entries of a preset file.

    Raises:
        SpaceError: no preset has that name (the message lists the ones that exist), or it is
            ``auto``, which is built, not read (see :func:`merge_space`).
    """
    if name == AUTO:
        raise SpaceError([f"search_space.preset: '{AUTO}' is built from the model and the data "
                          f"when the config is loaded (search_spaces.auto.build_space), not "
                          f"read from a file. Fix: pass its entries to merge_space(auto=...)."])
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        import difflib

        close = difflib.get_close_matches(name, list_presets(), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise SpaceError([f"search_space.preset: no preset named '{name}'; presets: "
                          f"{', '.join(list_presets())}.{hint} Fix: use one of them, or list "
                          f"the searched settings under search_space yourself."])
    return yaml.safe_load(path.read_text()) or {}


def merge_space(spec: dict | None, *, auto: dict | None = None) -> dict:
    """Entries of a ``search_space`` block: its ``preset`` (if any) overlaid by inline entries.

    ``auto``: the entries ``preset: auto`` stands for (built by the caller from the model;
    ``{}`` checks the inline entries alone).

    Raises:
        SpaceError: an unknown preset, or ``preset: auto`` without ``auto``.
    """
    spec = dict(spec or {})
    preset = spec.pop("preset", None)
    if preset == AUTO and auto is not None:
        entries = dict(auto)
    else:
        entries = load_preset(preset) if preset else {}
    entries.update(spec)
    return entries


def is_auto(spec: dict | str | None) -> bool:
    """Whether a ``search_space`` block (or its string shorthand) asks for ``auto``."""
    return spec == AUTO or (isinstance(spec, dict) and spec.get("preset") == AUTO)


__all__ = ["AUTO", "Domain", "SpaceError", "is_auto", "list_presets", "load_preset",
           "merge_space", "parse_space"]
