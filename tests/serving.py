"""Helpers for the ``qlora-sweep serve`` tests: start the server as a user would (the CLI, in
the background), wait for its one line, and stop it by its PID."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from dataclasses import dataclass, field

from .conftest import listening_sockets, start_cli, stop

SERVED_LINE = re.compile(r"^serving (http://127\.0\.0\.1:(\d+)/v1) \(models: (.+)\)$")


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    port: int
    models: list[str]
    first_line: str
    # (address, port, process name) of every socket its processes listened on once it was ready
    listening: list = field(default_factory=list)
    children: list = field(default_factory=list)  # psutil.Process of everything it started


def start_server(*args: str, timeout: float = 600) -> Server:
    """``qlora-sweep serve ARGS --port 0``, ready: its one stdout line read and parsed.

    Raises AssertionError with the server's output when it exits or prints no URL in time."""
    import psutil

    proc = start_cli("serve", *args, "--port", "0", stderr=True)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    line = got[0] if got else ""
    match = SERVED_LINE.match(line.strip())
    if not match:
        stop(proc)
        raise AssertionError(f"serve printed {line!r}, not its URL; stderr:\n"
                             f"{proc.stderr.read()[-4000:]}")
    server = Server(proc=proc, url=match.group(1), port=int(match.group(2)),
                    models=match.group(3).split(", "), first_line=line)
    server.listening = listening_sockets(proc.pid)
    server.children = psutil.Process(proc.pid).children(recursive=True)
    return server


def generate_answers(cli, adapter: str, prompts: list[str], max_new_tokens: int) -> list[str]:
    """``qlora-sweep generate ADAPTER PROMPT... --max-new-tokens N``'s answers, in order."""
    proc = cli("generate", adapter, *prompts, "--max-new-tokens", str(max_new_tokens),
               timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["prompt"] for r in rows] == prompts, proc.stdout
    return [r["completion"] for r in rows]
