"""The private APIs qlora-sweep still touches (``trainables/compat/``) are there, with the shape
it relies on, in the installed Ray and datasets: an upgrade that changes one fails here, not in
the middle of a user's sweep. Also: the public Optuna storage calls that replaced private ones."""

from __future__ import annotations

import inspect

import pytest

pytestmark = pytest.mark.fast


def test_a_trials_stop_request_is_the_sessions_stop_event():
    from ray.train._internal import session

    assert callable(session.get_session)
    assert "self.stop_event = threading.Event()" in inspect.getsource(session._TrainSession)
    from trainables.compat.ray_private import stop_requested

    assert stop_requested() is False  # no session outside a trial


def test_the_trial_storage_comes_from_the_public_context():
    from ray import tune

    assert callable(tune.get_context().get_storage)
    from ray.train._internal.storage import StorageContext

    source = inspect.getsource(StorageContext)
    assert "self.storage_filesystem" in source and "def trial_fs_path" in source


def test_the_cluster_config_getter_and_the_loopback_switch():
    import ray
    from ray._private import ray_constants, services

    assert callable(ray._private.state.state.get_cluster_config)
    assert isinstance(ray_constants.ENABLE_RAY_CLUSTER, bool)
    assert "ENABLE_RAY_CLUSTER" in inspect.getsource(services.get_node_ip_address)
    from trainables.compat.ray_private import cluster_config

    assert cluster_config() is None  # no Ray running: no GCS, no config


def test_a_serve_replica_binds_its_grpc_server_through_the_patched_helper():
    """``serve_grpc_on_loopback`` swaps the helper the replica calls after its constructor."""
    from ray.serve._private import replica

    assert callable(replica.add_port_to_grpc_server)
    source = inspect.getsource(replica.Replica._on_initialized)
    assert 'add_port_to_grpc_server(self._server, "[::]:0")' in source


def test_a_cluster_address_resolves_as_ray_init_resolves_it(monkeypatch):
    from trainables.compat.ray_private import bootstrap_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    host, _, port = bootstrap_address("10.1.2.3:6379").rpartition(":")
    assert (host, port) == ("10.1.2.3", "6379")
    assert bootstrap_address("local") is None


def test_ashas_bracket_takes_results_and_fills_its_rungs():
    from types import SimpleNamespace

    from ray.tune.schedulers import ASHAScheduler

    from trainables.compat.ray_private import asha_bracket

    asha = ASHAScheduler(time_attr="step", metric="eval_loss", mode="min", max_t=40,
                         grace_period=10, reduction_factor=2, brackets=1)
    bracket = asha_bracket(asha)
    for trial, value in (("a", -1.0), ("b", -2.0)):
        bracket.on_result(SimpleNamespace(trial_id=trial), 10, value)
    assert [len(rung[1]) for rung in bracket._rungs if rung[0] == 10] == [2]


# (grace_period, max_t, reduction_factor): the shipped examples, the defaults, and cases where
# the log ratio is a whole number (a rung exactly at max_t, or just short of it in floats) or
# the milestones are not whole steps.
RUNG_CASES = [(60, 240, 2), (200, 1000, 3), (25, 200, 2), (20, 200, 2), (30, 200, 2),
              (10, 1000, 10), (1, 100, 4), (10, 10, 2), (5, 45, 3), (20, 240, 1.5),
              (7, 1000, 3.3), (100, 1000, 10), (3, 243, 3), (1, 1000, 10), (20, 100, 1.2),
              (50, 50, 4), (16, 1024, 2), (13, 900, 2.5)]


def test_validation_puts_ashas_rungs_where_rays_bracket_does():
    """``asha_rungs`` (validation, without Ray) and the milestones of Ray's own ASHA bracket
    are the same list: the rung checks of ``evaluation.cadence: rungs`` and
    ``scheduler.early_eval_samples`` depend on it."""
    from ray.tune.schedulers import ASHAScheduler

    from orchestrator.config.rules import asha_rungs
    from trainables.compat.ray_private import asha_milestones

    for grace, max_t, factor in RUNG_CASES:
        asha = ASHAScheduler(time_attr="step", metric="eval_loss", mode="min", max_t=max_t,
                             grace_period=grace, reduction_factor=factor)
        ours = asha_rungs(grace, max_t, factor)
        assert [float(r) for r in ours] == asha_milestones(asha), (grace, max_t, factor)


def test_rays_resource_granularity():
    """GPU shares are floored to, and trials per node counted in, Ray's fixed-point units
    (``orchestrator/run/resource_units.py``)."""
    from ray._private import ray_constants

    from orchestrator.run.resource_units import UNITS

    assert ray_constants.MIN_RESOURCE_GRANULARITY * UNITS == 1


def test_a_restored_tuners_config_can_be_replaced():
    from ray.tune.impl.tuner_internal import TunerInternal
    from ray.tune.tuner import Tuner

    source = inspect.getsource(TunerInternal)
    for name in ("self._tune_config =", "self._run_config =", "self._param_space ="):
        assert name in source, name
    assert "self._local_tuner" in inspect.getsource(Tuner)
    assert callable(Tuner.can_restore)


def test_the_search_generator_state_an_extension_changes():
    from ray.tune.search.search_generator import SearchGenerator

    source = inspect.getsource(SearchGenerator)
    for name in ("self._total_samples", "self._finished", "self._experiment", "CKPT_FILE_TMPL",
                 "def set_state", "def restore_from_dir"):
        assert name in source, name


def test_a_datasets_fingerprint():
    from datasets import Dataset

    from trainables.compat.datasets_private import fingerprint

    value = fingerprint(Dataset.from_dict({"prompt": ["a"], "completion": ["b"]}))
    assert isinstance(value, str) and len(value) >= 16


def test_optuna_public_storage_finds_studies_and_trials_by_name_and_number(tmp_path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "j.journal")))
    for name in ("first", "second"):
        study = optuna.create_study(study_name=name, storage=storage)
        study.ask()
    names = sorted((s.study_name for s in storage.get_all_studies()),
                   key=storage.get_study_id_from_name)
    assert names == ["first", "second"]
    study_id = storage.get_study_id_from_name("second")
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, 0)
    storage.set_trial_system_attr(trial_id, "qlora_sweep", "lost")
    trial = optuna.load_study(study_name="second", storage=storage).trials[0]
    assert trial.system_attrs["qlora_sweep"] == "lost"


def test_inside_a_distribution():
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    from orchestrator.run.extend import _inside

    assert _inside(CategoricalDistribution(["attention", "q_proj+v_proj"]), "attention")
    assert not _inside(CategoricalDistribution([8, 16]), 32)
    assert _inside(FloatDistribution(1e-5, 1e-3, log=True), 3e-4)
    assert not _inside(FloatDistribution(1e-5, 1e-3, log=True), 3e-3)
    assert _inside(IntDistribution(4, 16, step=4), 12)
    assert not _inside(IntDistribution(4, 16, step=4), 10)
    assert not _inside(FloatDistribution(0.0, 1.0), "0.5")
