"""Every use of a private Ray API, in one place, each checked on Ray 2.60 (2.60.0).

qlora-sweep uses Ray's public API (``tune.report``, ``tune.get_checkpoint``,
``tune.get_context``, ``Tuner.restore``) wherever one exists. What follows has no public
equivalent in Ray 2.60; each use names what it relies on, and ``tests/test_compat.py`` fails
when an upgrade of Ray changes it. A missing private API raises :class:`ChangedAPI`, which
names it and the version it was checked on, instead of an ``AttributeError`` deep in a run.

This module lives in ``trainables`` because both sides use Ray: the worker (a trial's stop
request) and the driver (``orchestrator`` may import ``trainables``, never the reverse).
"""

from __future__ import annotations

import glob
import os
from typing import Any

CHECKED_ON = "2.60"


class ChangedAPI(RuntimeError):
    """A private Ray API this module relies on is gone or changed."""

    def __init__(self, what: str, err: Exception):
        import ray

        super().__init__(f"qlora-sweep relies on Ray's {what}, checked on Ray {CHECKED_ON}; "
                         f"Ray {ray.__version__} changed it ({type(err).__name__}: {err}). "
                         f"Install ray[tune]=={CHECKED_ON}.* or a qlora-sweep made for this Ray.")


# --- the worker ---------------------------------------------------------------------------


def stop_requested() -> bool:
    """Ray asked the running trial to stop (ASHA, or the sweep ended) while its worker is kept
    for the next trial (actor reuse).

    Relies on: ``ray.train._internal.session.get_session().stop_event``, a
    ``threading.Event`` Ray sets when it stops the trial (2.60). Public Ray has no stop signal
    for a function trainable: it stops the trial at its next ``tune.report``.
    """
    try:
        from ray.train._internal.session import get_session

        session = get_session()
        return session is not None and session.stop_event.is_set()
    except (ImportError, AttributeError) as err:
        raise ChangedAPI("ray.train._internal.session.get_session().stop_event", err) from err


# --- the driver ---------------------------------------------------------------------------


def cluster_config():
    """The autoscaler's node groups as the GCS knows them (``node_group_configs``: name,
    resources, max_count), or None where the GCS has none.

    Relies on: ``ray._private.state.state.get_cluster_config()`` (2.60), which KubeRay and
    the cluster launcher fill in; Ray has no public autoscaler API.
    """
    import ray

    try:
        getter = ray._private.state.state.get_cluster_config
    except AttributeError as err:
        raise ChangedAPI("ray._private.state.state.get_cluster_config", err) from err
    try:
        return getter()
    except Exception:  # an older GCS, or none: the caller falls back to the launcher's file
        return None


def keep_loopback_node_ip() -> None:
    """Keep Ray from replacing a 127.0.0.1 node IP with the machine's network address.

    Relies on: ``ray._private.ray_constants.ENABLE_RAY_CLUSTER``, read by
    ``ray._private.services.get_node_ip_address`` (2.60); the environment variable that sets it,
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``, is read once when Ray is imported, so this
    process's copy is set here and Ray's processes inherit the variable.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        from ray._private import ray_constants

        if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
            raise AttributeError("ENABLE_RAY_CLUSTER")
        ray_constants.ENABLE_RAY_CLUSTER = False
    except (ImportError, AttributeError) as err:
        raise ChangedAPI("ray._private.ray_constants.ENABLE_RAY_CLUSTER", err) from err


def serve_grpc_on_loopback() -> None:
    """In a Ray Serve replica on a node whose IP is 127.0.0.1 (a local Ray kept on loopback):
    make the replica's inter-deployment gRPC server listen on 127.0.0.1 instead of every
    interface. On any other node nothing changes (replicas of other nodes must reach it).

    Relies on: ``ray.serve._private.replica.add_port_to_grpc_server``, which
    ``Replica._on_initialized`` calls with ``"[::]:0"`` after the deployment's constructor has
    run (2.60); this is called from that constructor. Ray 2.60 has no setting for the address.
    """
    import ray

    if ray.util.get_node_ip_address() != "127.0.0.1":
        return
    try:
        from ray.serve._private import replica

        original = replica.add_port_to_grpc_server
    except (ImportError, AttributeError) as err:
        raise ChangedAPI("ray.serve._private.replica.add_port_to_grpc_server", err) from err
    if getattr(original, "loopback_only", False):
        return

    def on_loopback(server, address: str):
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address.removeprefix("[::]:")
        return original(server, address)

    on_loopback.loopback_only = True
    replica.add_port_to_grpc_server = on_loopback


def asha_bracket(asha):
    """The one bracket of an ``ASHAScheduler`` made with ``brackets=1``, whose
    ``on_result(trial, step, signed value)`` fills its rungs.

    Relies on: ``ASHAScheduler._brackets`` and ``_Bracket.on_result`` (2.60). Ray does not save
    ASHA's rungs with the experiment; a resumed sweep refills them this way.
    """
    try:
        bracket = asha._brackets[0]
        bracket.on_result  # noqa: B018 - checked here, called by the caller
    except (AttributeError, IndexError) as err:
        raise ChangedAPI("ASHAScheduler._brackets[0].on_result", err) from err
    return bracket


def asha_milestones(asha) -> list[float]:
    """The rungs of an ``ASHAScheduler``'s one bracket, lowest first, as Ray computed them.

    Relies on: ``_Bracket._rungs``, a list of ``(milestone, recorded results)``, highest
    milestone first (2.60). Validation computes the same list without Ray
    (``orchestrator.config.rules.asha_rungs``); ``tests/test_compat.py`` compares the two.
    """
    bracket = asha_bracket(asha)
    try:
        milestones = [float(milestone) for milestone, _ in bracket._rungs]
    except (AttributeError, TypeError, ValueError) as err:
        raise ChangedAPI("ASHAScheduler._brackets[0]._rungs", err) from err
    return sorted(milestones)


class RestoredTuner:
    """What a restored ``Tuner`` has no public way to change: its scheduler, search algorithm,
    number of samples and callbacks (all pickled in ``tuner.pkl``), and its ``param_space``
    (which ``Tuner.restore`` refuses to change).

    Relies on: ``Tuner._local_tuner`` and its ``_tune_config``, ``_run_config`` and
    ``_param_space`` (2.60).
    """

    def __init__(self, tuner):
        try:
            self._internal = tuner._local_tuner
            self.tune_config = self._internal._tune_config
            self._internal._run_config.callbacks  # noqa: B018 - checked here
            self._internal._param_space  # noqa: B018
        except AttributeError as err:
            raise ChangedAPI("Tuner._local_tuner._tune_config/_run_config/_param_space",
                             err) from err

    def set_param_space(self, space: dict[str, Any]) -> None:
        self._internal._param_space = space

    def set_callbacks(self, callbacks: list) -> None:
        self._internal._run_config.callbacks = callbacks


def extendable_search(searcher, *, total: int, space: dict | None = None):
    """Ray's ``SearchGenerator`` around ``searcher`` for a sweep that gets more trials on
    resume: its saved state (``search_gen_state-*``) would otherwise bring back the old number
    of trials and "finished". ``space``: the search space changed and ``searcher`` is a new one
    (a new study); the old searcher's state is not restored, and the experiment's config
    becomes the new space.

    Relies on: ``SearchGenerator._total_samples``, ``_finished``, ``_experiment.spec``,
    ``CKPT_FILE_TMPL`` and the cloudpickled ``search_gen_state-*`` files (2.60).
    """
    import ray.cloudpickle as cloudpickle
    from ray.tune.search.search_generator import SearchGenerator

    class ExtendedSearch(SearchGenerator):
        def __init__(self):
            super().__init__(searcher)
            self._extend_to = total
            self._fresh = space is not None

        def set_state(self, state: dict) -> None:
            super().set_state(state)
            if self._fresh:  # a restored run adds no configurations: the experiment is saved
                self._experiment.spec["config"] = dict(space)
            if self._extend_to > self._total_samples:
                self._total_samples = self._extend_to
                self._finished = False

        def restore_from_dir(self, dirpath: str) -> None:
            if not self._fresh:
                return super().restore_from_dir(dirpath)
            paths = glob.glob(os.path.join(dirpath, self.CKPT_FILE_TMPL.format("*")))
            if paths:  # the newest state, as Ray itself picks it
                with open(max(paths), "rb") as f:
                    self.set_state(cloudpickle.load(f))

    return ExtendedSearch()


def bootstrap_address(address: str) -> str | None:
    """The ``host:port`` that ``ray.init(address=...)`` connects to for a GCS address or
    ``"auto"`` (resolved as Ray resolves it: ``RAY_ADDRESS``, then the last ``ray start`` of
    this machine), None where Ray would start a new one.

    Relies on: ``ray._private.services.canonicalize_bootstrap_address`` (2.60), which
    ``ray.init`` calls itself. Raises ConnectionError when ``"auto"`` finds no cluster.
    """
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError as err:
        raise ChangedAPI("ray._private.services.canonicalize_bootstrap_address", err) from err
    return canonicalize_bootstrap_address(address)
