"""A fork server for the CLI: ``python -m tests.cli_server MODULE ...``.

It imports the modules named on its command line once (torch, transformers, PEFT,
bitsandbytes and TRL take about 7 s of CPU to import), then runs each command it is sent in a
child forked from itself: ``orchestrator.cli.main(args)`` with the child's stdout and stderr
in files and its stdin from /dev/null, as ``python -m orchestrator ARGS`` would. The
environment the libraries read at import (``HF_ENDPOINT``, ``HF_HOME``) is the server's; a
request's own variables are set in the child before the command runs.

Protocol, one JSON object per line: the request ``{"args": [...], "env": {name: value or
null}, "timeout": seconds, "stdout": path, "stderr": path}`` on stdin; the answer
``{"returncode": int, "timed_out": bool}`` on stdout. The server handles one command at a time
and ends when its stdin closes.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time


def _child(request: dict) -> None:
    """In the forked child: run the command and exit with its code; never returns."""
    code = 1
    try:
        for name, value in request["env"].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        # The server's text streams wrap fds 1 and 2, which now are the files.
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", closefd=False, buffering=1)
        from orchestrator.cli import main

        code = main(request["args"])
    except SystemExit as err:  # argparse: --help, --version, a usage error
        code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
        if isinstance(err.code, str):
            print(err.code, file=sys.stderr)
    except BaseException:  # what an uncaught exception does to `python -m orchestrator`
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code if isinstance(code, int) else 1)


def _wait(pid: int, timeout: float) -> tuple[int, bool]:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -signal.SIGKILL, True
        time.sleep(0.02)


def serve(preload: list[str]) -> None:
    # Answers go to the pipe that was stdout; what a library prints goes to stderr.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for name in preload:
        importlib.import_module(name)
    print(json.dumps({"ready": True}), file=replies, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            replies.close()
            _child(request)
        code, timed_out = _wait(pid, request["timeout"])
        print(json.dumps({"returncode": code, "timed_out": timed_out}), file=replies, flush=True)


if __name__ == "__main__":
    serve(sys.argv[1:])
