"""Count the reads of tensor values into Python during training steps, by the code that asks.

A read (``.item()``, ``bool(t)``, ``.tolist()``, ``float(t)``, ``int(t)``) of a tensor on a GPU
waits for every kernel queued before it: a device sync. ``HostReads`` sees each read through
``torch``'s function-mode hook, whatever the device, and files it under the innermost
caller outside torch (``path:line (function)``). On a GPU ``device_only`` keeps the reads of GPU tensors (the syncs); on
a CPU every tensor is a host tensor, so the count shows which reads *would* sync on a GPU
where the tensor lives there (the optimizer's step counter, for one, stays on the CPU).
"""

from __future__ import annotations

import collections
import traceback

import torch
from torch.overrides import TorchFunctionMode
from transformers import TrainerCallback

_READS = {torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.tolist, torch.Tensor.__float__,
          torch.Tensor.__int__}


def _caller() -> str:
    for frame in reversed(traceback.extract_stack()[:-1]):
        name = frame.filename.replace("\\", "/")
        if "/torch/" not in name and not name.endswith("host_reads.py"):
            short = name.split("site-packages/")[-1]
            return f"{short}:{frame.lineno} ({frame.name})"
    return "?"


class HostReads(TorchFunctionMode):
    """Counts reads while ``on``; ``by_step[step]`` is a Counter of callers."""

    def __init__(self, device_only: bool = False):
        super().__init__()
        self.on = False
        self.device_only = device_only
        self.step = 0
        self.by_step: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.on and func in _READS and args:
            tensor = args[0]
            if not self.device_only or tensor.device.type != "cpu":
                self.by_step[self.step][_caller()] += 1
        return func(*args, **(kwargs or {}))

    def callback(self) -> TrainerCallback:
        """A Trainer callback that counts from the first step's start to the end of training,
        filing each read under the step it falls in (numbered from 1; a log's reads go with
        the step it follows). Count a run that neither evaluates nor saves."""
        counter = self

        class Count(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                counter.step, counter.on = state.global_step + 1, True

            def on_train_end(self, args, state, control, **kwargs):
                counter.on = False

        return Count()
