"""The versions of the libraries qlora-sweep was tested with, and a plain word when the
installed ones lie outside them.

``pyproject.toml`` bounds each dependency to the major series it was written for (a user's
own pins still resolve); within a series, the project was tested on exactly the minor
versions below: the whole suite on this machine's set, the private APIs of
:mod:`trainables.compat` checked on the same. A version outside them may work, and may not:
the first command (``validate``, ``run``, ``resume``) says which ones differ, once, instead of
a failure deep inside a trial. Read with :mod:`importlib.metadata`: nothing is imported.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import datasets_private, ray_private

# distribution name -> the tested "major.minor" (keep in step with pyproject.toml's ranges)
TESTED: dict[str, str] = {
    "ray": ray_private.CHECKED_ON,
    "datasets": datasets_private.CHECKED_ON,
    "trl": "1.16",  # trainables/deferred_metrics.py relies on its SFTTrainer internals
    "transformers": "5.25",
    "peft": "0.21",
    "bitsandbytes": "0.50",
    "optuna": "5.1",
    "torch": "2.13",
}


def _minor(text: str) -> str:
    parts = text.split("+")[0].split(".")
    return ".".join(parts[:2])


def untested(installed: dict[str, str | None] | None = None) -> list[str]:
    """One line for each tested library whose installed major.minor differs from the tested
    one (``installed``: name -> version, read from the environment when not given; a missing
    library is left to the import that needs it)."""
    if installed is None:
        installed = {}
        for name in TESTED:
            try:
                installed[name] = version(name)
            except PackageNotFoundError:
                installed[name] = None
    lines = []
    for name, tested in TESTED.items():
        have = installed.get(name)
        if have is not None and _minor(have) != tested:
            lines.append(f"{name} {have} (tested: {tested}.x)")
    return lines
