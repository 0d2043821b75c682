"""``qlora-sweep tensorboard SWEEP_DIR``: TensorBoard on the sweep, with its URL printed."""

from __future__ import annotations

import errno
import logging
import socket
import time

from ..errors import UserError
from ..sweepdir.folder import open_sweep


log = logging.getLogger(__name__)


def check_port(host: str, port: int) -> None:
    """Raises UserError when ``host:port`` cannot be bound (in use, or not an address here)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise UserError(f"--port {port}: already in use on {host} (another TensorBoard "
                                f"or server). Fix: choose another port, e.g. --port {port + 1}, "
                                f"or --port 0 for any free one.") from None
            raise UserError(f"--host {host}: cannot listen there ({err.strerror}). Fix: use "
                            f"127.0.0.1 (this machine only) or 0.0.0.0 (every interface).") from None


PULL_PERIOD_S = 30.0


def serve(path: str, *, host: str = "127.0.0.1", port: int = 6006) -> int:
    """Start TensorBoard on the sweep dir and serve until interrupted (Ctrl-C)."""
    sweep = open_sweep(path)
    if not any(sweep.path.glob("*/events.out.tfevents.*")):
        raise UserError(f"SWEEP_DIR {sweep.where}: no TensorBoard data yet (it appears when the "
                        f"base model has been evaluated). Fix: run this again in a moment.")
    check_port(host, port)
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(sweep.path), "--host", host, "--port", str(port),
                          "--reload_interval", "5"])
    try:
        url = board.launch()
    except program.TensorBoardServerException as err:
        raise UserError(f"--host {host} --port {port}: TensorBoard could not start its server "
                        f"({err.msg}). Fix: choose another --port, or --port 0.") from None
    log.info(f"TensorBoard on {sweep.name}: {url}")
    log.info("  Scalars: every trial's curves by training step, the base model as the "
             "'baseline' run")
    log.info("  HParams: every trial's searched values and its best and final "
             f"{sweep.metric}; press Ctrl-C to stop")
    if sweep.remote:
        log.info(f"  (served from the local copy {sweep.path}, downloaded again every "
                 f"{PULL_PERIOD_S:.0f} s)")
    try:
        while True:
            time.sleep(PULL_PERIOD_S if sweep.remote else 3600)
            if sweep.remote:
                sweep.remote.pull()  # TensorBoard reloads what changed
    except KeyboardInterrupt:
        return 0
