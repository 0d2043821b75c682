"""A local sweep listens on loopback only: every socket of the driver, Ray's processes and the
trial workers, listed about once a second while the shared smoke sweep ran (its fixture lists
them: ``conftest.listening_sockets``)."""

from __future__ import annotations

import ipaddress


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    if getattr(address, "ipv4_mapped", None) is not None:  # ::ffff:127.0.0.1
        address = address.ipv4_mapped
    return address.is_loopback


def test_a_local_sweep_listens_on_loopback_only(smoke_sweep):
    seen = {(ip, port): name for ip, port, name in smoke_sweep.listening}
    print("listening:", ", ".join(f"{ip}:{port} {name}" for (ip, port), name in sorted(seen.items())))
    names = set(seen.values())
    assert smoke_sweep.running, "no trial was seen running"
    # Ray's own servers, the workers' and the driver's were seen, so the check is not vacuous.
    assert {"gcs_server", "raylet"} <= names and len(seen) >= 6, seen
    exposed = {f"{ip}:{port}": name for (ip, port), name in seen.items() if not _loopback(ip)}
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_the_check_sees_an_address_beyond_loopback():
    """The address test itself: what a Ray 2.60 sweep without the loopback switch listened on."""
    assert _loopback("127.0.0.1") and _loopback("::1") and _loopback("::ffff:127.0.0.1")
    assert not _loopback("0.0.0.0") and not _loopback("192.0.2.2") and not _loopback("::")
