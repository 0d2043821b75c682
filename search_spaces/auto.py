"""``search_space: auto``: a search space built from the model and the data, with the reason
for each setting, and initial points drawn from it.

What it searches, and why (the sources are Thinking Machines' "LoRA Without Regret", 2025, and
the QLoRA paper, Dettmers et al. 2023):

- ``training.learning_rate``: loguniform over [centre / 4, centre x 4], the centre a calibrated
  LoRA learning rate for the model's family and width (:mod:`search_spaces.lr_rule`). The
  learning rate is what matters most (their Llama-3.1-8B sweeps: LR 4e-5 -> 3e-4 moved test NLL
  ~4.7 %, rank 16 -> 128 ~0.5 %).
- ``lora.target_modules``: all linear layers first, the MLP layers as the alternative (LoRA on
  all layers beats attention-only; the MLP layers carry most of it). A group the model does
  not have is left out.
- ``lora.r``: the ladder 8, 16, 32, only ranks up to hidden_size / 4 (at least one value: the
  cap itself on a model narrower than 32).
- ``lora.dropout``: 0, 0.05, 0.1 (the QLoRA paper: 0.1 for 7-13B models, 0.05 for 33-65B) when
  a trial sees its training rows more than once; on fewer examples than the training rows (one
  pass or less, nothing repeated to overfit) 0 and 0.05 only. The data's one effect.
- ``lora.alpha_ratio`` is not searched: alpha = ratio x r with the config's ratio (default 2,
  the demo's known-good value). With Adam, alpha / r scales each update as the learning rate
  does, and the learning rate is searched over 16x already.

Initial points: the learning-rate centre, then half and twice it, each with all linear layers,
the middle rank and the middle dropout (at most ``num_trials`` of them).

Pure Python: the caller reads the model's ``config.json`` and linear-module names, and counts
the data; nothing here imports torch or reads files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from .lr_rule import lr_centre
from .targets import resolve_groups

RANK_LADDER = (8, 16, 32)
DROPOUTS = (0.0, 0.05, 0.1)
DROPOUTS_ONE_PASS = (0.0, 0.05)
TARGET_ORDER = ("all-linear", "mlp")  # all linear layers first
LR_SPAN = 4.0  # the range is [centre / LR_SPAN, centre x LR_SPAN]
POINT_FACTORS = (1.0, 0.5, 2.0)  # initial points: the centre, half, twice


@dataclass(frozen=True)
class DataFacts:
    """What the data says about a trial: its training rows (None: not counted, e.g. a Hub
    dataset, which is not downloaded to build the space) and the examples one trial trains on
    (max_steps x batch x gradient accumulation; with packing, at least that many)."""

    train_rows: int | None
    examples_per_trial: int
    packed: bool = False

    @property
    def epochs(self) -> float | None:
        """How many times a trial sees each training row (at least, with packing)."""
        return self.examples_per_trial / self.train_rows if self.train_rows else None

    def describe(self) -> str:
        if self.train_rows is None:
            return (f"{self.examples_per_trial} examples per trial, training rows not counted "
                    f"(not a local file)")
        more = "at least " if self.packed else ""
        return (f"{self.train_rows} training rows, {more}{self.examples_per_trial} examples per "
                f"trial ({more}{self.epochs:.2g} epochs)")


@dataclass(frozen=True)
class AutoSpace:
    """The space ``auto`` chose: entries as a user writes them, why each, and the points."""

    entries: dict[str, Any]
    reasons: dict[str, str]  # entry -> why (every entry has one)
    initial_points: list[dict[str, Any]]
    summary: str  # what it was built from: the model, the data
    fixed: dict[str, str] = field(default_factory=dict)  # settings left fixed -> why
    yours: tuple[str, ...] = ()  # entries the config wrote itself (overriding or added)


def sci(x: float) -> str:
    """``0.0031236`` -> ``3.12e-3``: three significant digits, a short exponent."""
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _round3(x: float) -> float:
    return float(f"{x:.3g}")


def build_space(model_config: dict, linear_names: list[str], data: DataFacts | None = None, *,
                alpha_ratio: float = 2.0, alpha: float | None = None,
                num_trials: int | None = None) -> AutoSpace:
    """The auto space for a model (its ``config.json`` as a dict and its linear-module names)
    and the data.

    ``alpha_ratio``/``alpha``: the config's fixed LoRA alpha settings, for the note on alpha.
    ``num_trials``: at most this many initial points.

    Raises:
        ValueError: the config names no hidden size, or the model has no linear layer to
            adapt (the message says which).
    """
    centre = lr_centre(model_config)
    lr = _round3(centre.lr)
    low, high = _round3(lr / LR_SPAN), _round3(lr * LR_SPAN)
    hidden = centre.hidden_size

    groups = resolve_groups(linear_names)
    targets = [g for g in TARGET_ORDER if groups.get(g)]
    if not targets:
        raise ValueError("it has no linear layer that LoRA can adapt (its linear layers: "
                         f"{', '.join(linear_names) or 'none'})")
    cap = max(1, hidden // 4)
    ranks = [r for r in RANK_LADDER if r <= cap] or [cap]

    epochs = data.epochs if data else None
    one_pass = epochs is not None and epochs <= 1 and not data.packed
    dropouts = DROPOUTS_ONE_PASS if one_pass else DROPOUTS

    entries = {
        "training.learning_rate": {"loguniform": [low, high]},
        "lora.target_modules": {"choice": list(targets)},
        "lora.r": {"choice": ranks},
        "lora.dropout": {"choice": list(dropouts)},
    }
    layers = model_config.get("num_hidden_layers") or model_config.get("n_layer")
    missing = [g for g in TARGET_ORDER if g not in targets]
    reasons = {
        "training.learning_rate": f"centre {sci(lr)} from {centre.formula()} ({centre.rule()}), "
                                  f"/{LR_SPAN:g} to x{LR_SPAN:g}",
        "lora.target_modules": (
            "all linear layers first, then the MLP layers (LoRA Without Regret: all layers "
            "beat attention-only)" + (f"; this model has no {', '.join(missing)} group"
                                      if missing else "")
            + f"; all-linear here: {', '.join(groups['all-linear'])}"),
        "lora.r": (f"the ladder {', '.join(map(str, RANK_LADDER))} up to hidden_size/4 = {cap}"
                   + ("" if ranks != [cap] else " (below the ladder: the cap itself)")),
        "lora.dropout": (
            ("the QLoRA paper's 0.05-0.1 and none" if not one_pass else
             "0 and 0.05 only: a trial sees each training row at most once, nothing repeated "
             "to overfit")
            + (f"; the data: {data.describe()}" if data else "")),
    }
    if alpha is not None:
        fixed = {"lora.alpha": f"fixed at {alpha:g} (lora.alpha); not searched"}
    else:
        fixed = {"lora.alpha_ratio": f"fixed at {alpha_ratio:g} (alpha = {alpha_ratio:g} x r, "
                                     f"lora.alpha_ratio); not searched: with Adam, alpha/r "
                                     f"scales each update as the learning rate does, searched "
                                     f"over {LR_SPAN ** 2:g}x already"}
    points = [{"training.learning_rate": _round3(lr * f), "lora.target_modules": targets[0],
               "lora.r": _middle(ranks), "lora.dropout": _middle(dropouts)}
              for f in POINT_FACTORS]
    if num_trials is not None:
        points = points[:max(1, num_trials)]
    summary = (f"{centre.model_type or 'model'}, hidden_size {hidden}"
               + (f", {layers} layers" if layers else "")
               + (f"; {data.describe()}" if data else ""))
    return AutoSpace(entries=entries, reasons=reasons, initial_points=points,
                     summary=summary, fixed=fixed)


def _middle(values) -> Any:
    values = list(values)
    return values[len(values) // 2]


def with_entries(auto: AutoSpace, explicit: dict[str, Any]) -> AutoSpace:
    """``auto`` with the config's own entries on top (they override auto's, as entries override
    a preset's), and its initial points moved into what is then searched: a setting the
    config searches itself takes auto's value where its space holds it, else the nearest value
    it holds (a range: auto's value clipped into it, or its middle)."""
    if not explicit:
        return auto
    entries = {**auto.entries, **explicit}
    reasons = dict(auto.reasons)
    for name, spec in explicit.items():
        before = auto.entries.get(name)
        reasons[name] = (f"yours (auto's: {_spec_text(before)})" if before is not None
                         else "yours")
    points = []
    for point in auto.initial_points:
        moved = {name: _value_in(spec, point.get(name)) for name, spec in entries.items()}
        if moved not in points:
            points.append(moved)
    fixed = {k: v for k, v in auto.fixed.items() if k not in explicit and not (
        k == "lora.alpha_ratio" and "lora.alpha" in explicit)}
    return replace(auto, entries=entries, reasons=reasons, initial_points=points, fixed=fixed,
                   yours=tuple(explicit))


def _spec_text(spec: Any) -> str:
    (kind, args), = (spec.items() if isinstance(spec, dict) else [("choice", spec)])
    if kind == "choice":
        return "choice of " + ", ".join(map(str, args))
    return f"{kind} {', '.join(map(str, args))}"


def _value_in(spec: Any, preferred: Any) -> Any:
    """A value of the entry ``spec`` (as written: ``{choice: [...]}``, a bare list, or a range
    rule), as close to ``preferred`` as it holds; with no preference, its first choice or the
    middle of its range. A spec that breaks the rules gets ``preferred`` as it is, for the
    config's own checks to report."""
    rule = spec if isinstance(spec, dict) else {"choice": spec}
    if not isinstance(rule, dict) or len(rule) != 1:
        return preferred
    (kind, args), = rule.items()
    if kind == "choice":
        if not isinstance(args, list) or not args:
            return preferred
        if preferred in args:
            return preferred
        numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
        if isinstance(preferred, (int, float)) and numbers:
            return min(numbers, key=lambda a: abs(math.log(a / preferred))
                       if a > 0 and preferred > 0 else abs(a - preferred))
        return args[0]
    try:
        low, high = float(args[0]), float(args[1])
        q = float(args[2]) if len(args) > 2 else None
    except (TypeError, ValueError, IndexError):
        return preferred
    if isinstance(preferred, (int, float)) and not isinstance(preferred, bool):
        value = min(max(float(preferred), low), high)
    elif "log" in kind and low > 0:
        value = math.sqrt(low * high)
    else:
        value = (low + high) / 2
    if q:
        value = min(max(round(value / q) * q, low), high)
    if kind in ("int", "randint", "qrandint"):
        return int(round(value))
    return _round3(value)
