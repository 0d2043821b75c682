"""``resources.gpu: auto``: the trial memory estimate against measured peak memory (real 4-bit
QLoRA training in a fresh process), and the packing it decides."""

from __future__ import annotations

import pytest

from benchmarks.memory_estimate import configured, long_data, measure
from orchestrator.errors import UserError
from orchestrator.config.loading import load_config
from orchestrator.run.auto_resources import (CPU_PROCESS_BYTES, gpu_share, largest_trial,
                                             resolve_auto)
from orchestrator.run.resource_units import UNITS, fits, share_per_gpu, units
from orchestrator.config.preflight import preflight
from trainables.memory_estimate import CUDA_CONTEXT_BYTES, FRAGMENTATION, estimate, model_shape

from .conftest import EXAMPLES, write_config
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
    # 7 per GPU: round(1/7, 4) = 0.1429 made Ray place 6; the floored 0.1428 places 7.
    for gpu_bytes, share in ((int(per_trial * 3.5), 0.3333), (int(per_trial * 1.2), 1.0),
                             (int(per_trial * 7.5), 0.1428)):
        resolved = resolve_auto(cfg, derived, spec, has_gpus=True,
                                gpu_memory={"A10G": gpu_bytes})
        assert resolved.resources.gpu == share and cfg.resources.gpu == "auto"
    assert "A10G" in caplog.messages[0] and "holds 3" in caplog.messages[0]
    assert "each trial takes 0.3333 GPU (3 per GPU)" in caplog.messages[0]
    assert "0.1428 GPU (7 per GPU)" in caplog.messages[2]
    with pytest.raises(UserError) as err:
        resolve_auto(cfg, derived, spec, has_gpus=True, gpu_memory={"A10G": int(per_trial * 0.9)})
    text = err.value.render()
    assert "resources.gpu = auto" in text and "lora.r=64" in text and "Fix:" in text


def test_gpu_auto_on_mixed_gpus_fits_the_smallest_a_trial_can_land_on(searched, caplog):
    """cluster.yaml's workers: A10G (24 GB) and H100 (80 GB). A share sized on the H100 would
    run out of memory on an A10G, where Ray may place the trial: the share fits the A10G."""
    cfg, derived, spec = searched
    est, _ = largest_trial(spec, derived, on_gpu=True)
    per_trial = est.total * (1 + FRAGMENTATION) + CUDA_CONTEXT_BYTES
    memory = {"A10G": int(per_trial * 2.5), "H100": int(per_trial * 9.2)}
    caplog.set_level("INFO", logger="orchestrator")
    resolved = resolve_auto(cfg, derived, spec, has_gpus=True, gpu_memory=memory)
    assert resolved.resources.gpu == 0.5
    told = caplog.messages[0]
    assert "sized on the smallest (A10G)" in told and "H100" in told and "holds 9" in told
    assert "resources.accelerator_type: H100 would pack 9 per GPU there" in told
    # Pinned to the H100s (resources.accelerator_type: H100), only their memory counts.
    pinned = cfg.model_copy(update={"resources": cfg.resources.model_copy(
        update={"accelerator_type": "H100"})})
    assert resolve_auto(pinned, derived, spec, has_gpus=True,
                        gpu_memory={"H100": memory["H100"]}).resources.gpu == 0.1111
    # A trial too large for the A10G but not for the H100: pin it there.
    with pytest.raises(UserError) as err:
        resolve_auto(cfg, derived, spec, has_gpus=True,
                     gpu_memory={"A10G": int(per_trial * 0.8), "H100": memory["H100"]})
    assert "Fix: set resources.accelerator_type: H100" in err.value.render()


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


# --- GPU arithmetic in Ray's units, with the values a GPU cluster reports (no GPU here) ------


@pytest.mark.fast
def test_a_gpu_share_is_floored_so_that_n_trials_fit_one_gpu():
    """Ray 2.60 truncates a request to 1/10000 units (0.14286 GPU takes 1428, 0.1667 takes
    1666: 1666.9999... as a double; measured with ray.available_resources() after placing an
    actor). round(1/n, 4) rounds up for n = 6, 7, 15, 18; all but 6 (saved by that
    truncation) then fit one trial less: 7 x 0.1429 > 1, so Ray placed 6 where 7 were planned."""
    rounded_up = [n for n in range(1, 21) if n * round(1 / n, 4) > 1]
    assert rounded_up == [6, 7, 15, 18]
    assert [n for n in rounded_up if fits(1.0, round(1 / n, 4)) < n] == [7, 15, 18]
    for n in range(1, 100):
        share = share_per_gpu(n)
        assert fits(1.0, share) == n and n * units(share) <= UNITS, n
    assert share_per_gpu(7) == 0.1428 and share_per_gpu(3) == 0.3333
    for n in (150, 1000, 20000):  # past 99 per GPU Ray cannot place exactly n: never more
        assert fits(1.0, share_per_gpu(n)) <= n


@pytest.mark.fast
def test_concurrency_is_counted_in_integers(tmp_path):
    """1 // 0.2 == 4.0 and 8 // 0.1 == 79.0 in floats: one trial too few per node."""
    from orchestrator.run.cluster import max_concurrent

    for gpu, node, expected in ((0.2, {"CPU": 8.0, "GPU": 1.0}, 5),
                                (0.1, {"CPU": 192.0, "GPU": 8.0}, 80),
                                (0.1428, {"CPU": 8.0, "GPU": 1.0}, 7),
                                (1, {"CPU": 192.0, "GPU": 8.0}, 8)):
        cfg, _ = load_config(write_config(tmp_path / "s.yaml", resources={"gpu": gpu}), [])
        assert max_concurrent(cfg, nodes=[{"Resources": node}], node_types=[]) == expected, gpu


@pytest.mark.fast
def test_the_gpu_types_a_trial_can_land_on_in_cluster_yaml():
    """The memory probe runs once per GPU type: cluster.yaml's A10G and H100 worker types
    (declared with Ray's accelerator_type resource), plus the types of alive nodes."""
    import yaml

    from orchestrator.run.auto_resources import gpu_types
    from orchestrator.run.cluster import launcher_node_types

    root = EXAMPLES.parent
    types = launcher_node_types(yaml.safe_load((root / "cluster.yaml").read_text()))
    assert gpu_types(None, nodes=[], node_types=types) == ["A10G", "H100"]
    assert gpu_types("H100", nodes=[], node_types=types) == ["H100"]
    assert gpu_types("L4", nodes=[], node_types=types) == []
    head = {"Resources": {"CPU": 8.0}}
    l4 = {"Resources": {"CPU": 8.0, "GPU": 1.0, "accelerator_type:L4": 1.0}}
    untyped = {"Resources": {"CPU": 8.0, "GPU": 1.0}}
    assert gpu_types(None, nodes=[head, l4, untyped], node_types=types) == [
        "A10G", "H100", "L4", None]
    # A type the autoscaler may not add (max_workers 0) is not where a trial lands.
    for t in types:
        t.max_workers = 0
    assert gpu_types(None, nodes=[head], node_types=types) == []


@pytest.mark.fast
def test_gpu_share_on_cluster_yaml_gpus():
    """With the memory an A10G and an H100 report (nvidia-smi's memory.total, 23028 and 81559
    MiB; not read here, there is no GPU), the share of a 9 GiB trial fits the A10G (2 per
    GPU), not the H100 (7)."""
    memory = {"A10G": 23028 * 2**20, "H100": 81559 * 2**20}
    need = 9 * GiB
    share, told = gpu_share(need, memory)
    assert share == 0.5 and fits(1.0, share) == 2
    assert "A10G 22.5 GiB holds 2, H100 79.6 GiB holds 7" in told
    assert "sized on the smallest (A10G)" in told
    assert gpu_share(need, {"H100": memory["H100"]}, pinned=True)[0] == 0.1428
    with pytest.raises(UserError) as err:
        gpu_share(30 * GiB, memory)
    assert "Fix: set resources.accelerator_type: H100" in err.value.render()
