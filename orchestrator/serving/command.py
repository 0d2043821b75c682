"""``qlora-sweep serve``: start Ray (on loopback) and Ray Serve, deploy the OpenAI-compatible
app, print one line with its URL once it answers, and run until Ctrl-C or SIGTERM, which
shut Serve down (and Ray, if this command started it)."""

from __future__ import annotations

import json
import logging
import signal
import socket
import sys
import time
import urllib.request

from ..errors import RUNTIME_EXIT, UserError
from .sources import parse_adapter_args, resolve_served

APP_NAME = "qlora-sweep"
READY_TIMEOUT_S = 600  # loading a large base model (and downloading it) may take minutes


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _raise_interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def run_serve(source: str, *, name: str, adapters: list[str], host: str, port: int,
              max_tokens_limit: int, allow_pickle: bool = False) -> int:
    """Serve until stopped; returns the exit code (0 after Ctrl-C or SIGTERM).

    Raises:
        UserError: a bad setting or source (before Ray starts), or the app failed to start.
    """
    if max_tokens_limit < 1:
        raise UserError(f"--max-tokens-limit {max_tokens_limit}: must be at least 1. Fix: e.g. "
                        f"--max-tokens-limit 256.")
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: not a TCP port. Fix: 1-65535, or 0 for any free port.")
    model, served = resolve_served([(name, source), *parse_adapter_args(adapters)],
                                   allow_pickle=allow_pickle)
    try:
        port = port or _free_port(host)
    except OSError as err:
        raise UserError(f"--host {host}: cannot listen there ({err.strerror}). Fix: an address "
                        f"of this machine, e.g. 127.0.0.1 or 0.0.0.0.") from None

    import ray
    from ray import serve

    from ..run.ray_session import init_ray

    # Serve's own progress lines ("Started Serve", "Application is ready") are not news: the
    # one line this command prints says it.
    for noisy in ("ray.serve", "ray"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    started = init_ray(None, log_to_driver=False)
    # After Ray's start: its driver installs a SIGTERM handler of its own (a stack dump, then
    # death without Serve's shutdown); SIGTERM stops the server as Ctrl-C does.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        url = _deploy(serve, ray, model, served, host=host, port=port, limit=max_tokens_limit)
        # The command's one line of data (a script reads the URL from it): stdout itself.
        sys.stdout.write(f"serving {url} (models: {', '.join(s.name for s in served)})\n")
        sys.stdout.flush()
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # The app is deleted (its replica stopped), not all of Serve: on a cluster this joined,
        # Serve may hold other apps; a Ray this command started goes with Serve's controller
        # and proxy. (serve.shutdown() would kill the controller while Ray still retries its
        # graceful_shutdown task, and Ray prints that failure on stdout.)
        try:
            serve.delete(APP_NAME)
        except Exception as err:  # noqa: BLE001 - the error that got here matters more
            logging.getLogger(__name__).debug("serve.delete failed: %s", err)
        finally:
            if started:
                ray.shutdown()


def _deploy(serve, ray, model: dict, served: list, *, host: str, port: int, limit: int) -> str:
    """Deploy the app on Serve and wait until its HTTP endpoint answers; returns its URL."""
    from .app import OpenAIServer

    resources = ray.cluster_resources()
    gpus = 1 if resources.get("GPU", 0) >= 1 else 0
    # A CPU replica uses the node's cores for torch; a GPU one needs one core beside its GPU.
    cpus = 1 if gpus else max(1, int(resources.get("CPU", 1)))
    serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly",
                logging_config={"log_level": "WARNING", "enable_access_log": False})
    deployment = OpenAIServer.options(ray_actor_options={"num_cpus": cpus, "num_gpus": gpus})
    try:
        serve.run(deployment.bind(model, served, max_tokens_limit=limit), name=APP_NAME,
                  route_prefix="/", blocking=False)
    except RuntimeError as err:  # the replica failed to start: its error's last line
        lines = [ln for ln in str(err).splitlines() if ln.strip()]
        raise UserError(f"serve: the model could not be loaded: "
                        f"{lines[-1] if lines else type(err).__name__}. The replica's log is "
                        f"in Ray's session logs (/tmp/ray/session_latest/logs/serve).",
                        exit_code=RUNTIME_EXIT) from None
    shown = f"[{host}]" if ":" in host else host
    local = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    probe = f"http://{f'[{local}]' if ':' in local else local}:{port}/v1/models"
    deadline = time.monotonic() + READY_TIMEOUT_S
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no HTTP proxy
    while True:
        try:
            with direct.open(probe, timeout=5) as response:
                if response.status == 200 and json.loads(response.read())["data"]:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise UserError(f"serve: nothing answered at {probe} within {READY_TIMEOUT_S} s.",
                            exit_code=RUNTIME_EXIT)
        time.sleep(0.2)
    return f"http://{shown}:{port}/v1"


def main_args(args) -> int:
    """The CLI's entry (``orchestrator/cli.py``)."""
    return run_serve(args.source, name=args.name, adapters=args.adapter, host=args.host,
                     port=args.port, max_tokens_limit=args.max_tokens_limit,
                     allow_pickle=args.allow_pickle)
