"""TRL's per-step metrics kept on the device until a log reads them (``training.deferred_metrics``).

TRL's ``SFTTrainer.compute_loss`` turns the batch's token accuracy and entropy into Python
floats on every step (``num_valid > 0``, two ``.item()``) and counts the trained tokens with
another ``.item()``; with ``logging_nan_inf_filter`` the Trainer adds an ``isnan``/``isinf``
check of the step's loss. On a GPU each of those waits for the step's kernels to finish, so the
CPU cannot queue the next work while the GPU runs. Here the same values stay tensors, one per
step, and :meth:`log` reads them all at once, so the only reads left are one per log.

The loss is computed as TRL's plain path computes it (fused LM head, token-summed log-probs
over the token count). Anything else TRL does differently (a ``compute_loss_func``, label
smoothing, a mixture-of-experts auxiliary loss, sequence parallelism, callers that want the
outputs, a TRL without the state this relies on) goes to TRL's own ``compute_loss``. A test
checks that both give the same logs.

The Trainer's ``logging_nan_inf_filter`` (a read of every step's loss) is off with it
(``trainables/trial.py``): a non-finite loss, in a training step or an eval batch, is then
logged as it is instead of being left out, and the trial stops as diverged.
"""

from __future__ import annotations

from functools import lru_cache


def supported() -> bool:
    """Whether the installed TRL computes the loss with the fused LM head this path relies on."""
    try:
        from trl.trainer.utils import add_fused_lm_head  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=1)
def trainer_class():
    """``SFTTrainer`` subclass that defers the per-step metric reads to logging time."""
    import torch
    from trl import SFTTrainer

    class DeferredMetricsSFTTrainer(SFTTrainer):
        _pending_tokens = None  # tokens trained since the last log, a device tensor
        _unread = False  # tensors wait in self._metrics

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # The TRL state this class keeps as TRL 1.16 does; another TRL: TRL's own path.
            self._deferrable = all(hasattr(self, name) for name in (
                "_metrics", "_total_train_tokens", "_tp_size", "aux_loss_enabled"))

        def _stock_loss(self, return_outputs: bool) -> bool:
            config = getattr(self.accelerator, "parallelism_config", None)
            return (not self._deferrable or return_outputs or self.compute_loss_func is not None
                    or self.aux_loss_enabled
                    or (self.label_smoother is not None and self.args.loss_type == "nll")
                    or self.args.loss_type not in ("nll", "dft")
                    or bool(getattr(config, "sp_enabled", False)))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self._stock_loss(return_outputs):
                self._settle()  # keep the metric lists all floats for TRL's own appends
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            mode = "train" if self.model.training else "eval"
            inputs["use_cache"] = False
            outputs = model(**inputs, fused_lm_head=True)
            per_token_loss = -outputs.log_probs  # zero where the label is ignored
            if self.args.loss_type == "dft":
                per_token_loss = per_token_loss * outputs.log_probs.exp().detach()
            num_tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = per_token_loss.sum() / torch.as_tensor(num_tokens).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())

            gather = self.accelerator.gather_for_metrics
            num_valid = gather(outputs.label_mask.sum()).sum()
            entropy_sum = gather(outputs.entropy.detach().sum()).sum()
            num_correct = gather(outputs.is_top1.sum()).sum()
            some = num_valid > 0
            per_valid = num_valid.clamp(min=1)
            self._metrics[mode]["entropy"].append(torch.where(some, entropy_sum / per_valid, 0.0))
            self._metrics[mode]["mean_token_accuracy"].append(
                torch.where(some, num_correct / per_valid, 0.0))
            self._unread = True
            if mode == "train":
                if "attention_mask" in inputs:
                    tokens = gather(inputs["attention_mask"].sum()).sum()
                elif "position_ids" in inputs:
                    ids = inputs["position_ids"]
                    tokens = gather(torch.tensor(ids.size(1), device=ids.device)).sum()
                else:
                    raise ValueError("Expected 'attention_mask' or 'position_ids' in inputs.")
                tokens = tokens // self._tp_size
                self._pending_tokens = (tokens if self._pending_tokens is None
                                        else self._pending_tokens + tokens)
            self._metrics[mode]["num_tokens"] = [None]  # the running total, filled in by _settle
            return loss

        def _settle(self) -> None:
            """Read every deferred value (one read for the metrics, one for the token count)."""
            if not self._unread:
                return
            self._unread = False
            if self._pending_tokens is not None:
                self._total_train_tokens += int(self._pending_tokens.item())
                self._pending_tokens = None
            slots = [(values, i) for metrics in self._metrics.values() for values in metrics.values()
                     for i, v in enumerate(values) if torch.is_tensor(v)]
            if slots:
                read = torch.stack([values[i].float() for values, i in slots]).tolist()
                for (values, i), value in zip(slots, read):
                    values[i] = value
            for metrics in self._metrics.values():
                if metrics.get("num_tokens") == [None]:
                    metrics["num_tokens"] = [self._total_train_tokens]

        def log(self, logs, start_time=None):
            self._settle()
            return super().log(logs, start_time)

    return DeferredMetricsSFTTrainer
