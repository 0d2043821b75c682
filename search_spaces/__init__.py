"""Search-space presets (YAML files in this folder) and their pure loader.

``load_preset(name)`` reads ``<name>.yaml``; ``search_spaces.domains`` parses entries and turns
them into Ray Tune domains; ``search_spaces.targets`` resolves LoRA target-module groups. No
torch, and no I/O beyond reading these YAML files.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .domains import Domain, SpaceError, parse_space

PRESET_DIR = Path(__file__).parent


def list_presets() -> list[str]:
    """Names of the shipped presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict:
    """The raw entries of a preset.

    Raises:
        SpaceError: no preset has that name (the message lists the ones that exist).
    """
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        import difflib

        close = difflib.get_close_matches(name, list_presets(), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise SpaceError([f"search_space.preset: no preset named '{name}'; presets: "
                          f"{', '.join(list_presets())}.{hint} Fix: use one of them, or list "
                          f"the searched settings under search_space yourself."])
    return yaml.safe_load(path.read_text()) or {}


def merge_space(spec: dict | None) -> dict:
    """Entries of a ``search_space`` block: its ``preset`` (if any) overlaid by inline entries."""
    spec = dict(spec or {})
    preset = spec.pop("preset", None)
    entries = load_preset(preset) if preset else {}
    entries.update(spec)
    return entries


__all__ = ["Domain", "SpaceError", "list_presets", "load_preset", "merge_space", "parse_space"]
