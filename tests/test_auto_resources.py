"""``resources.gpu: auto``: the trial memory estimate against measured peak memory (real 4-bit
QLoRA training in a fresh process), and the packing it decides."""

from __future__ import annotations

import pytest

from benchmarks.memory_estimate import configured, long_data, measure
from orchestrator.errors import UserError
from orchestrator.config.loading import load_config
from orchestrator.run.auto_resources import CPU_PROCESS_BYTES, largest_trial, resolve_auto
from orchestrator.config.preflight import preflight
from trainables.memory_estimate import CUDA_CONTEXT_BYTES, FRAGMENTATION, estimate, model_shape

from .conftest import write_config
from .test_trainable import tiny_spec

GiB = 2**30


def test_the_estimate_follows_measured_peak_memory_on_the_tiny_model(tiny_model_dir, tmp_path):
    data = long_data(tmp_path / "data")  # every example fills max_length
    small, large = (configured(tiny_spec(), str(tiny_model_dir), data, r=r, batch=batch,
                               length=length, targets="all-linear")
                    for r, batch, length in ((8, 8, 128), (32, 16, 256)))
    shape = model_shape(small.model)
    estimated = [estimate(shape, s, on_gpu=False).total for s in (small, large)]
    measured = [measure(s)["peak"] for s in (small, large)]
    print("estimate / measured MiB:", [(e >> 20, m >> 20) for e, m in zip(estimated, measured)])
    for e, m in zip(estimated, measured):
        assert 0.7 < m / e < 1.4, (e, m)
    # What four times the tokens (and a larger rank) add is estimated too, not only a constant.
    grew_e, grew_m = estimated[1] - estimated[0], measured[1] - measured[0]
    assert 0.6 < grew_m / grew_e < 1.5, (grew_e, grew_m)


@pytest.fixture
def searched(tmp_path):
    """A sweep over rank and batch: the largest trial is r=64 at batch 16."""
    cfg, derived = load_config(write_config(
        tmp_path / "s.yaml", resources={"gpu": "auto"},
        search_space={"lora.r": {"choice": [8, 64]},
                      "training.per_device_train_batch_size": {"choice": [4, 16]},
                      "training.learning_rate": {"loguniform": [1e-4, 1e-3]}}), [])
    return cfg, derived, preflight(cfg, derived)


def test_gpu_auto_packs_as_many_trials_as_the_estimate_fits(searched, caplog):
    cfg, derived, spec = searched
    est, values = largest_trial(spec, derived, on_gpu=True)
    assert values == {"lora.r": 64, "training.per_device_train_batch_size": 16}
    per_trial = est.total * (1 + FRAGMENTATION) + CUDA_CONTEXT_BYTES
    caplog.set_level("INFO", logger="orchestrator")
    for gpu_bytes, share in ((int(per_trial * 3.5), 0.3333), (int(per_trial * 1.2), 1.0)):
        resolved = resolve_auto(cfg, derived, spec, has_gpus=True, gpu_bytes=gpu_bytes)
        assert resolved.resources.gpu == share and cfg.resources.gpu == "auto"
    assert "holds 3, so each trial takes 0.3333 GPU" in caplog.messages[0]
    with pytest.raises(UserError) as err:
        resolve_auto(cfg, derived, spec, has_gpus=True, gpu_bytes=int(per_trial * 0.9))
    text = err.value.render()
    assert "resources.gpu = auto" in text and "lora.r=64" in text and "Fix:" in text


def test_gpu_auto_without_gpus_runs_on_cpu_and_reserves_the_estimated_ram(searched):
    cfg, derived, spec = searched
    resolved = resolve_auto(cfg, derived, spec, has_gpus=False)
    est, _ = largest_trial(spec, derived, on_gpu=False)
    assert resolved.resources.gpu == 0
    assert resolved.resources.memory_gb == round((est.total + CPU_PROCESS_BYTES) / GiB, 2)

    from orchestrator.run.cluster import max_concurrent, trial_request

    request = trial_request(resolved)
    assert request["memory"] == int(resolved.resources.memory_gb * GiB)
    # Cores and RAM both bound how many trials a node runs.
    node = {"Resources": {"CPU": 8.0, "memory": 2.5 * request["memory"]}}
    assert max_concurrent(resolved, nodes=[node], node_types=[]) == 2
    node["Resources"]["memory"] = 100.0 * request["memory"]
    assert max_concurrent(resolved, nodes=[node], node_types=[]) == 8


def test_a_large_space_finds_its_largest_trial_one_setting_at_a_time(tmp_path):
    """Past ``exhaustive_limit`` combinations, the settings are maximised one at a time; that
    finds the same trial as trying every combination."""
    cfg, derived = load_config(write_config(
        tmp_path / "big.yaml", resources={"gpu": "auto"},
        search_space={"lora.r": {"choice": [4, 8, 16, 32, 64]},
                      "lora.target_modules": {"choice": ["attention", "all-linear", "mlp"]},
                      "lora.dropout": {"uniform": [0.0, 0.1]},
                      "lora.use_dora": {"choice": [False, True]},
                      "training.per_device_train_batch_size": {"choice": [16, 2, 8, 4]},
                      "training.per_device_eval_batch_size": {"choice": [8, 32, 16]},
                      "training.gradient_checkpointing": {"choice": [True, False]}}), [])
    spec = preflight(cfg, derived)
    for on_gpu in (True, False):
        every = largest_trial(spec, derived, on_gpu=on_gpu)
        one_at_a_time = largest_trial(spec, derived, on_gpu=on_gpu, exhaustive_limit=1)
        assert one_at_a_time[0].total == every[0].total, on_gpu
        assert one_at_a_time[1]["lora.r"] == every[1]["lora.r"] == 64
        assert one_at_a_time[1]["training.per_device_train_batch_size"] == 16
