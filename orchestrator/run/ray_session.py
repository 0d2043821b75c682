"""The driver's Ray: started on loopback or joined, with the sweep's environment for its
workers, and one-off tasks run with a trial's resources."""

from __future__ import annotations

import logging
import os

from trainables.spec import TrialSpec

from ..config.schema import SweepConfig
from ..errors import RUNTIME_EXIT, UserError


def _runtime_env() -> dict:
    env = {"TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore",
           # How long a reused worker may take to end a stopped trial (it stops at the next
           # training step) before Ray gives up on reusing it and starts a new one.
           "TUNE_FUNCTION_THREAD_TIMEOUT_S": "300"}
    if os.environ.get("QLORA_SWEEP_CACHE"):
        env["QLORA_SWEEP_CACHE"] = os.environ["QLORA_SWEEP_CACHE"]
    return {"env_vars": env}


def quiet_ray_output() -> None:
    """Ray Tune settings of this process (read when the Tuner runs)."""
    # Snapshots after each checkpoint are what keeps a sweep resumable; Ray's warning about
    # their frequency is noise at our checkpoint sizes.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # The Tuner gets its loggers from orchestrator/run/tuner.py (no automatic TensorBoard
    # logger beside ours) and prints no status table of its own (verbose=0 in the old output
    # path; the newer one ignores it): the progress lines are the sweep's.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    # Tune logs each failed trial's whole traceback; the sweep logs "trial X errored: <the
    # error's last line>", status and the leaderboard keep it, and the trial's folder holds
    # the traceback (error.txt).
    logging.getLogger("ray.tune.execution.tune_controller").setLevel(logging.CRITICAL)
    logging.getLogger("ray.tune.tune").setLevel(logging.CRITICAL)  # "Trials did not complete"
    import optuna  # its "A new study created" line is not news either

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def loopback_only() -> None:
    """Make a local Ray listen on 127.0.0.1 only: its GCS, raylet, workers, driver and agents.

    Ray 2.60 has no bind-address setting: each of its servers binds to loopback when the
    node's IP is 127.0.0.1 and to every interface otherwise, and on Linux it replaces a
    loopback node IP with the machine's address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``
    is 0 (:func:`trainables.compat.ray_private.keep_loopback_node_ip`). Ray's token
    authentication (on by default for a local ``ray.init``) stays on. tests/test_loopback.py
    lists the sweep's listening sockets.
    """
    from trainables.compat.ray_private import keep_loopback_node_ip

    keep_loopback_node_ip()


def reachable(address: str, *, timeout: float = 5.0) -> None:
    """Something answers at the cluster address, or a UserError says so at once (Ray itself
    retries an address where nothing listens for minutes, printing its C++ log lines).

    Raises:
        UserError: no cluster found for ``auto``, or nothing answers at the address.
    """
    import socket

    from trainables.compat.ray_private import bootstrap_address

    given = address
    try:
        if address.startswith("ray://"):  # Ray Client: its server, by default on port 10001
            address = address.removeprefix("ray://")
        else:
            address = bootstrap_address(address) or ""
    except (ConnectionError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"--address {given}: no Ray cluster found ({first}). Fix: start one "
                        f"(`ray start --head`), or give the head node's address as host:6379 "
                        f"(`ray status` on the head prints it).") from None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return  # Ray reports an address it cannot parse itself
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise UserError(f"--address {given}: nothing answers at {host}:{port} ({why}, within "
                        f"{timeout:g} s). Fix: check the head node's address and port (`ray "
                        f"status` on the head prints it; GCS listens on 6379, Ray Client on "
                        f"10001), that the cluster is up, and that a firewall lets this machine "
                        f"reach it.") from None


def init_ray(address: str | None, *, log_to_driver: bool = True) -> bool:
    """Connect to (or start) Ray; returns whether this call started it. ``log_to_driver``
    False keeps what Ray's workers print in Ray's log files (``serve``: its console is its URL).

    Raises:
        UserError: ``address`` (or ``RAY_ADDRESS``) names a cluster that does not answer.
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        host = address.split("://")[-1].rsplit(":", 1)[0]
        if host in ("127.0.0.1", "localhost", "::1", "[::1]"):
            # A cluster bound to loopback (``ray start --node-ip-address 127.0.0.1``): Ray
            # would otherwise swap 127.0.0.1 for this machine's network address, where
            # nothing listens, and wait forever. Only this process's switch: the cluster's
            # own processes were started by `ray start`.
            from trainables.compat.ray_private import keep_loopback_node_ip

            keep_loopback_node_ip()
        reachable(address)
        ray.init(address=address, runtime_env=_runtime_env(), logging_level=logging.WARNING,
                 log_to_driver=log_to_driver)
    else:
        # "local": a new Ray on this machine, even when a `ray start` cluster runs here
        # (joining one is --address / RAY_ADDRESS), listening on loopback only.
        loopback_only()
        # Token authentication stays on; its banner is not news on a machine's own loopback.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR)
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                 runtime_env=_runtime_env(), logging_level=logging.WARNING,
                 log_to_driver=log_to_driver)
    return True


def on_worker(cfg: SweepConfig, fn, spec: TrialSpec, doing: str):
    """``fn(spec)`` as a Ray task with a trial's resources (the model loads there)."""
    import ray

    from trainables.data import DataError

    from .cluster import trial_request

    request = trial_request(cfg)
    task = ray.remote(num_cpus=request.pop("CPU"), num_gpus=request.pop("GPU"),
                      memory=request.pop("memory", None), resources=request or None)(fn)
    try:
        return ray.get(task.remote(spec))
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, DataError):
            raise UserError(f"data: {cause}") from None
        lines = [ln for ln in str(cause or err).splitlines() if ln.strip()]
        raise UserError(f"{doing} failed: {lines[-1] if lines else type(err).__name__}",
                        exit_code=RUNTIME_EXIT) from None
