"""nats-server set-ups only tests and benchmarks need: TLS blocks and clusters.

(The server itself, its config file and the ports file: app/natsd.py,
which `snoopbus up` runs.)
"""

from __future__ import annotations

from pathlib import Path


def tls_block(cert: Path, key: Path, ca: Path | None = None, verify: bool = False) -> str:
    """A `tls { }` block; `verify` demands a client certificate signed by `ca`."""
    lines = [f'cert_file: "{cert}"', f'key_file: "{key}"']
    if ca is not None:
        lines.append(f'ca_file: "{ca}"')
    if verify:
        lines.append("verify: true")
    return "tls {\n  " + "\n  ".join(lines) + "\n}\n"


def cluster_args(name: str, server_name: str, port: int, routes: list[int]) -> list[str]:
    """`extra_args` for one node of a JetStream cluster on loopback."""
    return [
        "--server_name", server_name,
        "--cluster_name", name,
        "--cluster", f"nats://127.0.0.1:{port}",
        "--routes", ",".join(f"nats://127.0.0.1:{p}" for p in routes),
    ]  # fmt: skip
