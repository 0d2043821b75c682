"""The sweep's TensorBoard logdir: one run per trial, a baseline run, and the HParams view.

The sweep dir is the logdir. Each ``trial_<id>/`` folder is a run holding every reported
metric at the training step (so the curves of all trials line up) and the trial's searched
values as HParams; ``baseline/`` holds the base model's eval metrics as flat lines and the
experiment's HParams config (every searched setting with its domain, and the metric).

Ray's own TensorBoard logger is replaced, not added to: it drops the values it cannot log
(lists, None) and writes HParams only when a trial ends. Here every searched value is
converted to a type HParams shows (numbers, booleans, strings; a list of modules becomes
``q_proj+v_proj``) and written when the trial starts, so a running trial is in the table.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from ray.tune.logger import LoggerCallback
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from search_spaces.domains import Domain, encode_choice, short_name
from trainables.metrics import tensorboard_tag

from ..sweepdir.names import BASELINE_RUN

CONSTANT_RUN = "constant_answer"  # the constant-answer reference's task metrics


def best_tag(metric: str) -> str:
    """The running best of the sweep's metric (its last value is the trial's best)."""
    return f"best/{tensorboard_tag(metric)}"


def hparam_value(value: Any) -> bool | float | str:
    """A searched value as HParams stores it: bool, number, or string (lists joined by ``+``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if value is None:
        return "none"
    return str(encode_choice(value))


def _hparam(name: str, domain: Domain) -> hp.HParam:
    display = short_name(name)
    if domain.kind != "choice":
        return hp.HParam(name, hp.RealInterval(float(domain.low), float(domain.high)), display)
    values = [hparam_value(v) for v in domain.values]
    if len({type(v) for v in values}) > 1:  # HParams wants one type per setting
        values = [str(v) for v in values]
    return hp.HParam(name, hp.Discrete(values), display)


def alpha_hparam(domains: dict[str, Domain], *, r: int, alpha: float | None,
                 alpha_ratio: float) -> hp.HParam:
    """LoRA alpha when it is not searched itself: the given alpha, or alpha_ratio x r over the
    values the sweep can try, so the HParams view shows it as a number with its range."""
    name = "lora.alpha"
    if alpha is not None and "lora.alpha_ratio" not in domains:
        return hp.HParam(name, hp.Discrete([float(alpha)]), short_name(name))

    def values(key: str, fixed: float) -> tuple[list[float], bool]:
        dom = domains.get(key)
        if dom is None:
            return [float(fixed)], True
        if dom.kind == "choice":
            return [float(v) for v in dom.values], True
        return [float(dom.low), float(dom.high)], False

    ranks, discrete_r = values("lora.r", r)
    ratios, discrete_ratio = values("lora.alpha_ratio", alpha_ratio)
    products = sorted({a * b for a in ranks for b in ratios})
    if discrete_r and discrete_ratio:
        return hp.HParam(name, hp.Discrete(products), short_name(name))
    return hp.HParam(name, hp.RealInterval(products[0], products[-1]), short_name(name))


def _scalars(step: int, values: dict[str, float]) -> event_pb2.Event:
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=tag, simple_value=v) for tag, v in values.items()])
    return event_pb2.Event(wall_time=time.time(), step=step, summary=summary)


def _summary_event(summary: summary_pb2.Summary) -> event_pb2.Event:
    return event_pb2.Event(wall_time=time.time(), step=0, summary=summary)


def _session_end(ok: bool) -> summary_pb2.Summary:
    data = plugin_data_pb2.HParamsPluginData(session_end_info=plugin_data_pb2.SessionEndInfo(
        status=api_pb2.STATUS_SUCCESS if ok else api_pb2.STATUS_FAILURE,
        end_time_secs=time.time()))
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=metadata.SESSION_END_INFO_TAG, metadata=metadata.create_summary_metadata(data))])


def metric_scalars(result: dict[str, Any]) -> dict[str, float]:
    """The reported metrics that have a tag and a finite value, keyed by tag."""
    out = {}
    for key, value in result.items():
        tag = tensorboard_tag(key)
        if (tag is not None and isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value)):
            out[tag] = float(value)
    return out


EXAMPLES_TAG = "task/examples"


def examples_markdown(examples_json: str) -> str:
    """A report's (prompt, reference, prediction) examples as a Markdown table."""
    import json

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ⏎ ").strip() or "(empty)"

    rows = ["| prompt | reference | prediction |", "|---|---|---|"]
    rows += [f"| {cell(e['prompt'])} | {cell(e['reference'])} | {cell(e['prediction'])} |"
             for e in json.loads(examples_json)]
    return "\n".join(rows)


def _text_event(step: int, tag: str, text: str) -> event_pb2.Event:
    """A TensorBoard text-plugin summary (the Text tab)."""
    from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.plugins.text import metadata as text_metadata

    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[text.encode()],
                                    tensor_shape=tensor_shape_pb2.TensorShapeProto())
    value = summary_pb2.Summary.Value(
        tag=tag, tensor=tensor,
        metadata=text_metadata.create_summary_metadata(display_name=tag, description=""))
    return event_pb2.Event(wall_time=time.time(), step=step,
                           summary=summary_pb2.Summary(value=[value]))


def write_baseline_run(sweep_dir: Path, *, baseline: dict[str, Any], domains: dict[str, Domain],
                       metric: str, max_steps: int, derived: list[hp.HParam] = ()) -> None:
    """The base model as a flat line from step 0 to ``max_steps``, plus the HParams config
    (the searched settings and the ``derived`` ones, such as alpha from alpha_ratio x r, and
    as metrics the sweep's metric and every task metric). The constant-answer reference is a
    run of its own, flat lines of its task metrics."""
    hparams = [_hparam(name, dom) for name, dom in domains.items()] + list(derived)
    tag = tensorboard_tag(metric)
    metrics = [hp.Metric(best_tag(metric), display_name=f"best {metric}"),
               hp.Metric(tag, display_name=f"final {metric}")]
    metrics += [hp.Metric(t, display_name=t.removeprefix("task/"))
                for t in metric_scalars(baseline) if t.startswith("task/") and t != tag]
    config = hp.hparams_config_pb(hparams=hparams, metrics=metrics)
    writer = EventFileWriter(str(sweep_dir / BASELINE_RUN))
    try:
        writer.add_event(_summary_event(config))
        values = {t: v for t, v in metric_scalars(baseline).items()
                  if t.startswith(("eval/", "task/"))}
        for step in (0, max_steps):
            writer.add_event(_scalars(step, values))
        if baseline.get("task_examples"):
            writer.add_event(_text_event(0, EXAMPLES_TAG,
                                         examples_markdown(baseline["task_examples"])))
    finally:
        writer.close()
    constant = (baseline.get("constant_reference") or {}).get("metrics")
    if constant:
        writer = EventFileWriter(str(sweep_dir / CONSTANT_RUN))
        try:
            values = metric_scalars(constant)
            for step in (0, max_steps):
                writer.add_event(_scalars(step, values))
        finally:
            writer.close()


def _run_dir(trial) -> str:
    """The trial's folder in the sweep dir when that is on this machine, so the curves are
    live there; otherwise Ray's staging folder, which Ray uploads to the storage."""
    from pyarrow.fs import LocalFileSystem

    if isinstance(trial.storage.storage_filesystem, LocalFileSystem):
        Path(trial.path).mkdir(parents=True, exist_ok=True)
        return trial.path
    trial.init_local_path()
    return trial.local_path


class TensorBoardCallback(LoggerCallback):
    """Ray Tune logger writing each trial's run in the sweep dir (see the module docstring).

    ``hparams_of(config)`` turns a trial's sampled config into the values to show (the searched
    ones plus derived ones such as the LoRA alpha).
    """

    _SAVED_FILE_TEMPLATES = ["events.out.tfevents.*"]

    def __init__(self, *, metric: str, mode: str, hparams_of):
        self._metric = metric
        self._better = min if mode == "min" else max
        self._hparams_of = hparams_of
        self._writers: dict[Any, EventFileWriter] = {}
        self._best: dict[Any, float] = {}

    def log_trial_start(self, trial) -> None:
        if trial in self._writers:
            self._writers[trial].close()
        writer = EventFileWriter(_run_dir(trial), flush_secs=10)
        values = {k: hparam_value(v) for k, v in self._hparams_of(trial.config).items()}
        writer.add_event(_summary_event(hp.hparams_pb(values, trial_id=trial.trial_id)))
        writer.flush()
        self._writers[trial] = writer

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        if trial not in self._writers:
            self.log_trial_start(trial)
        step = int(result.get("step", iteration))
        values = metric_scalars(result)
        value = result.get(self._metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            best = self._best.get(trial)
            self._best[trial] = value if best is None else self._better(best, value)
            values[best_tag(self._metric)] = float(self._best[trial])
        self._writers[trial].add_event(_scalars(step, values))
        if result.get("task_examples"):
            self._writers[trial].add_event(
                _text_event(step, EXAMPLES_TAG, examples_markdown(result["task_examples"])))
        self._writers[trial].flush()

    def log_trial_end(self, trial, failed: bool = False) -> None:
        writer = self._writers.pop(trial, None)
        self._best.pop(trial, None)
        if writer is not None:
            writer.add_event(_summary_event(_session_end(not failed)))
            writer.close()
