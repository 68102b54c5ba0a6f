"""Real PgBouncer processes in front of the test server, for the pooler tests.

PgBouncer refuses to run as root; as root it runs as the embedded server's user (who alone
can reach that server's socket directory) or `nobody` for a TCP server.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit


def available() -> bool:
    return shutil.which("pgbouncer") is not None


@contextmanager
def pgbouncer(server_dsn: str, pool_mode: str) -> Iterator[str]:
    """A PgBouncer in `pool_mode` on a free loopback port; yields the DSN through it (same
    user, password and database as `server_dsn`)."""
    parts = urlsplit(server_dsn)
    host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
    port = parse_qs(parts.query).get("port", [str(parts.port or 5432)])[0]
    listen = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix=f"loyaltyd-pgbouncer-{pool_mode}-"))
    password = f" password={parts.password}" if parts.password else ""
    (workdir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={host} port={port} user={parts.username or 'postgres'}{password}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {listen}\n"
        "unix_socket_dir =\n"
        "auth_type = any\n"
        f"pool_mode = {pool_mode}\n"
        "default_pool_size = 20\n"
        "max_client_conn = 200\n"
        f"logfile = {workdir / 'pgbouncer.log'}\n"
    )
    user = _run_as(host)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
        os.chown(workdir / "pgbouncer.ini", entry.pw_uid, entry.pw_gid)
    proc = subprocess.Popen(
        ["pgbouncer", "-q", str(workdir / "pgbouncer.ini")],
        user=user,
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(listen, proc)
        netloc = f"{parts.username or 'postgres'}@127.0.0.1:{listen}"
        yield urlunsplit(("postgresql", netloc, parts.path, "", ""))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def _run_as(server_host: str) -> str | None:
    if os.geteuid() != 0:
        return None
    if server_host.startswith("/"):
        return pwd.getpwuid(os.stat(server_host).st_uid).pw_name
    return "nobody"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("pgbouncer did not start listening")
