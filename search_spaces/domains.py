"""Search-space entries: parse the YAML form, check it, and turn it into Ray Tune domains.

An entry maps a dotted setting name to one sampling rule, written as a one-key mapping::

    lora.r: {choice: [8, 16, 32]}
    training.learning_rate: {loguniform: [1.0e-5, 3.0e-4]}
    lora.dropout: {quniform: [0.0, 0.1, 0.05]}
    lora.target_modules: {choice: [attention, all-linear, [q_proj, v_proj]]}

A bare list is shorthand for ``choice``. Integer ranges (``int``/``randint``/``qrandint``)
include both ends. Nothing here imports torch; Ray is imported only by :func:`to_tune`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

KINDS = ("choice", "int", "randint", "qrandint", "uniform", "quniform", "loguniform", "qloguniform")
_RANGE_KINDS = {"int": 2, "randint": 2, "qrandint": 3, "uniform": 2, "quniform": 3,
                "loguniform": 2, "qloguniform": 3}
_INT_KINDS = {"int", "randint", "qrandint"}


class SpaceError(ValueError):
    """A search-space entry that breaks a rule; ``problems`` lists every one found."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Domain:
    """One searched setting: how its values are drawn."""

    name: str
    kind: str
    values: tuple = ()
    low: float | None = None
    high: float | None = None
    q: float | None = None
    meta: dict = field(default_factory=dict, compare=False)

    def candidates(self) -> list[Any]:
        """Values to check against the setting's own rules (every choice, or both bounds)."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind in _INT_KINDS:
            return [int(self.low), int(self.high)]
        return [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "choice":
            return "choice of " + ", ".join(map(str, self.values))
        q = f" step {self.q:g}" if self.q else ""
        return f"{self.kind} {self.low:g} .. {self.high:g}{q}"


# Short column names for tables and dashboards; any other setting shows its last part.
_SHORT_NAMES = {"training.learning_rate": "lr", "lora.target_modules": "targets"}


def short_name(name: str) -> str:
    """``lora.r`` -> ``r``, ``training.learning_rate`` -> ``lr``, ``lora.target_modules`` -> ``targets``."""
    return _SHORT_NAMES.get(name, name.split(".", 1)[-1])


def encode_choice(value: Any) -> Any:
    """Make a choice value a scalar Optuna can store: a list of modules becomes ``a+b``."""
    if isinstance(value, (list, tuple)):
        return "+".join(str(v) for v in value)
    return value


def parse_entry(name: str, spec: Any) -> Domain:
    """Parse one entry; raises :class:`SpaceError` naming the rule that is broken."""
    where = f"search_space.{name}"
    if isinstance(spec, list):
        spec = {"choice": spec}
    if not isinstance(spec, dict) or len(spec) != 1:
        raise SpaceError([
            f"{where}: each entry must be one rule such as {{choice: [8, 16]}} or "
            f"{{loguniform: [1.0e-5, 1.0e-3]}}, got {spec!r}. Fix: write one of "
            f"{', '.join(KINDS)} with its values."
        ])
    (kind, args), = spec.items()
    if kind not in KINDS:
        import difflib

        close = difflib.get_close_matches(str(kind), KINDS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise SpaceError([f"{where}: unknown rule '{kind}'; known rules: {', '.join(KINDS)}.{hint}"])
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise SpaceError([
                f"{where}: 'choice' needs a non-empty list of values, got {args!r}. "
                f"Fix: list at least one value, e.g. {{choice: [8, 16]}}."
            ])
        encoded = [encode_choice(v) for v in args]
        if len(set(map(repr, encoded))) != len(encoded):
            raise SpaceError([f"{where}: 'choice' lists a value twice: {args!r}. Fix: remove the repeat."])
        return Domain(name, kind, values=tuple(encoded), meta={"raw": args})
    want = _RANGE_KINDS[kind]
    shape = "[low, high]" if want == 2 else "[low, high, step]"
    if (not isinstance(args, list) or len(args) != want
            or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)):
        raise SpaceError([f"{where}: '{kind}' takes {shape} as numbers, got {args!r}. "
                          f"Fix: write e.g. {{{kind}: {_example(kind)}}}."])
    low, high = float(args[0]), float(args[1])
    q = float(args[2]) if want == 3 else None
    problems = []
    if not low < high:
        problems.append(f"{where}: '{kind}' needs low < high, got low={args[0]}, high={args[1]}. "
                        f"Fix: swap them, or use {{choice: [{args[0]}]}} for a fixed value.")
    if kind in ("loguniform", "qloguniform") and low <= 0:
        problems.append(f"{where}: '{kind}' needs low > 0, got low={args[0]}. "
                        f"Fix: use a positive lower bound such as 1.0e-6.")
    if q is not None and q <= 0:
        problems.append(f"{where}: the step of '{kind}' must be > 0, got {args[2]}.")
    if kind in _INT_KINDS and not all(float(a).is_integer() for a in args):
        problems.append(f"{where}: '{kind}' takes whole numbers, got {args!r}.")
    if problems:
        raise SpaceError(problems)
    return Domain(name, kind, low=low, high=high, q=q)


def _example(kind: str) -> str:
    return {"int": "[4, 64]", "randint": "[4, 64]", "qrandint": "[8, 64, 8]",
            "uniform": "[0.0, 0.1]", "quniform": "[0.0, 0.1, 0.05]",
            "loguniform": "[1.0e-5, 1.0e-3]", "qloguniform": "[1.0e-5, 1.0e-3, 1.0e-5]"}[kind]


def parse_space(entries: dict[str, Any]) -> dict[str, Domain]:
    """Parse every entry, collecting all problems before raising."""
    domains: dict[str, Domain] = {}
    problems: list[str] = []
    for name, spec in entries.items():
        try:
            domains[name] = parse_entry(name, spec)
        except SpaceError as err:
            problems.extend(err.problems)
    if problems:
        raise SpaceError(problems)
    return domains


def grid_size(domains: dict[str, Domain]) -> int:
    """Number of combinations of a space made only of ``choice`` entries."""
    return math.prod(len(d.values) for d in domains.values())


def to_tune(domain: Domain, *, grid: bool = False):
    """The Ray Tune domain for one entry (``tune.grid_search`` for choices when ``grid``)."""
    from ray import tune

    k, lo, hi, q = domain.kind, domain.low, domain.high, domain.q
    if k == "choice":
        return tune.grid_search(list(domain.values)) if grid else tune.choice(list(domain.values))
    if k in ("int", "randint"):
        return tune.randint(int(lo), int(hi) + 1)  # Ray's upper bound is exclusive
    if k == "qrandint":
        return tune.qrandint(int(lo), int(hi), int(q))
    if k == "uniform":
        return tune.uniform(lo, hi)
    if k == "quniform":
        return tune.quniform(lo, hi, q)
    if k == "loguniform":
        return tune.loguniform(lo, hi)
    return tune.qloguniform(lo, hi, q)
