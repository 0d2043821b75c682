"""Count the reads of tensor values into Python during training steps, by the code that asks.

A read of a tensor on a GPU (``.item()``, ``bool(t)``, ``.tolist()``, ``float(t)``, ``int(t)``,
``t.__index__()``, ``.nonzero()``, ``.cpu()``, ``.numpy()``) waits for every kernel queued
before it: a device sync. ``HostReads`` sees each of those calls through ``torch``'s
function-mode hook, whatever the device, and files it under the innermost caller outside torch
(``path:line (function)``). Not hooked: boolean-mask indexing and ``.to("cpu")``, which sync
too. On a GPU ``device_only`` keeps the reads of GPU tensors (the syncs); on a CPU every tensor
is a host tensor, so the count shows which reads *would* sync on a GPU where the tensor lives
there (the optimizer's step counter, for one, stays on the CPU).
"""

from __future__ import annotations

import collections
import sys

import torch
from torch.overrides import TorchFunctionMode
from transformers import TrainerCallback

_READS = {torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.tolist, torch.Tensor.__float__,
          torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.nonzero, torch.Tensor.cpu,
          torch.Tensor.numpy}

# The code that reads values for the training logs: TRL's loss and log, the Trainer's step
# and log, and the deferred trainer's one read per log (trainables/deferred_metrics.py).
LOGGING = (("trl/trainer/sft_trainer.py", ("compute_loss", "log")),
           ("transformers/trainer.py", ("training_step", "_run_epoch", "log",
                                        "_maybe_log_save_evaluate")),
           ("trainables/deferred_metrics.py", ("compute_loss", "_settle", "log")))


def is_logging(caller: str) -> bool:
    """Whether a caller (``path:line (function)``) is one of :data:`LOGGING`."""
    where, _, function = caller.rpartition(" (")
    path = where.rsplit(":", 1)[0]
    return any(path.endswith(suffix) and function.rstrip(")") in functions
               for suffix, functions in LOGGING)


def _caller() -> str:
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename.replace("\\", "/")
        if "/torch/" not in name and not name.endswith("host_reads.py"):
            short = name.split("site-packages/")[-1]
            return f"{short}:{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
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

    def reads(self, step: int, *, logging: bool) -> int:
        """Reads in one step by the logging code (or, ``logging=False``, by everything else)."""
        return sum(n for caller, n in self.by_step[step].items() if is_logging(caller) == logging)

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
