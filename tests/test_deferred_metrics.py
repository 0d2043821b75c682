"""training.deferred_metrics: TRL's per-step metrics read once per log, with the same values."""

from __future__ import annotations

import pytest

from benchmarks.host_reads import HostReads
from tests.test_trainable import tiny_spec
from trainables.trial import _limit_threads, build_trainer

# Keys whose values are timings, not results.
_TIMING = {"train_runtime", "train_samples_per_second", "train_steps_per_second",
           "eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}


def _train(tmp_path, deferred: bool, packing: bool):
    s = tiny_spec({"packing": packing}, max_steps=6, logging_steps=3, eval_steps=3,
                  deferred_metrics=deferred)
    _limit_threads(s)
    reads = HostReads()
    trainer = build_trainer(s, str(tmp_path / f"d{int(deferred)}"), callbacks=[reads.callback()],
                            save=False)
    with reads:
        trainer.train()
    logs = [{k: v for k, v in entry.items() if k not in _TIMING}
            for entry in trainer.state.log_history]
    return trainer, logs, reads


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_deferred_metrics_log_what_trl_logs_without_a_read_on_every_step(tmp_path, packing):
    stock, stock_logs, stock_reads = _train(tmp_path, deferred=False, packing=packing)
    deferred, deferred_logs, deferred_reads = _train(tmp_path, deferred=True, packing=packing)
    assert type(stock).__name__ == "SFTTrainer"
    assert type(deferred).__name__ == "DeferredMetricsSFTTrainer"

    # The same logs, value for value: loss, grad norm, token accuracy, entropy, token count,
    # and the evaluations' loss, accuracy and entropy.
    assert deferred_logs == stock_logs
    logged = {k for entry in deferred_logs for k in entry}
    assert {"loss", "mean_token_accuracy", "entropy", "num_tokens", "eval_loss",
            "eval_mean_token_accuracy", "eval_entropy"} <= logged
    assert all(entry["num_tokens"] > 0 for entry in deferred_logs if "num_tokens" in entry)

    # Steps without a log: TRL reads its metrics on each of them, the deferred trainer on none.
    quiet = [step for step in range(1, 7) if step % 3]
    assert all(stock_reads.reads(step, logging=True) >= 4 for step in quiet)
    assert [deferred_reads.reads(step, logging=True) for step in quiet] == [0] * len(quiet)
    # ... and reads them at the logs instead.
    assert all(deferred_reads.reads(step, logging=True) > 0 for step in (3, 6))
