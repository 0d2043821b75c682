"""A local sweep listens on loopback only: every socket of the driver, Ray's processes and the
trial workers, listed while a trial runs."""

from __future__ import annotations

import ipaddress
import json
import time

import psutil

from .conftest import start_cli, stop, write_config


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    if getattr(address, "ipv4_mapped", None) is not None:  # ::ffff:127.0.0.1
        address = address.ipv4_mapped
    return address.is_loopback


def _listening(root: psutil.Process) -> list[tuple[str, int, str]]:
    """``(address, port, process name)`` of every listening TCP socket of ``root`` and its
    descendants (Ray's GCS, raylet, agents and workers are started by the driver)."""
    procs = {root.pid: root}
    try:
        procs.update({p.pid: p for p in root.children(recursive=True)})
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


def test_a_local_sweep_listens_on_loopback_only(tiny_model_dir, tmp_path):
    config = write_config(tmp_path / "lo.yaml", training={"max_steps": 60, "eval_steps": 20},
                          search={"algorithm": "random", "num_trials": 1},
                          search_space={"lora.r": {"choice": [4]}},
                          scheduler={"type": "none"},
                          storage={"path": str(tmp_path / "sweeps"), "name": "lo"})
    sweep = tmp_path / "sweeps" / "lo"
    run = start_cli("run", str(config))
    seen: dict[tuple[str, int], str] = {}
    trial_running = False
    try:
        root = psutil.Process(run.pid)
        deadline = time.monotonic() + 600
        while run.poll() is None and time.monotonic() < deadline:
            for ip, port, name in _listening(root):
                seen[(ip, port)] = name
            try:
                status = json.loads((sweep / "status.json").read_text())
                trial_running = trial_running or any(t["status"] == "running"
                                                     for t in status["trials"])
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            if trial_running and len(seen) >= 6:
                # Keep listing a little longer: workers open their servers as they start.
                for _ in range(5):
                    for ip, port, name in _listening(root):
                        seen[(ip, port)] = name
                    time.sleep(1)
                break
            time.sleep(0.5)
    finally:
        stop(run)
    print("listening:", ", ".join(f"{ip}:{port} {name}" for (ip, port), name in sorted(seen.items())))
    names = set(seen.values())
    assert trial_running, "no trial started"
    # Ray's own servers and the driver's were seen, so the check is not vacuous.
    assert {"gcs_server", "raylet"} <= names, seen
    exposed = {f"{ip}:{port}": name for (ip, port), name in seen.items() if not _loopback(ip)}
    assert not exposed, f"listening beyond loopback: {exposed}"
