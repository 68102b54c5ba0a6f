"""Real PgBouncer processes in front of the test server, for the pooler tests.

PgBouncer refuses to run as root; as root it runs as the embedded server's user (who alone
can reach that server's socket directory) or `nobody` for a TCP server.

Two PgBouncers can take part: the machine's (Debian 12's 1.18) and a current one (1.20 and
later know `track_extra_parameters`), found at `LOYALTYD_TEST_PGBOUNCER` or where
`.ci/build-pgbouncer` installs it. CI builds the current one, so there it must be present.
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
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

# Where .ci/build-pgbouncer installs a current PgBouncer (built from Debian's source package).
CURRENT_PGBOUNCER = Path("/opt/loyaltyd-ci/pgbouncer/bin/pgbouncer")


@dataclass(frozen=True)
class Bouncer:
    """One way to run PgBouncer: its binary and the settings added to its ini file."""

    label: str
    binary: str | None
    settings: str = ""


def available() -> bool:
    return shutil.which("pgbouncer") is not None


def current_binary() -> str | None:
    configured = os.environ.get("LOYALTYD_TEST_PGBOUNCER")
    if configured:
        return configured
    return str(CURRENT_PGBOUNCER) if CURRENT_PGBOUNCER.exists() else None


def session_poolers() -> list[Bouncer]:
    """Session mode as the machine's PgBouncer runs it, and as a current one runs it with
    `track_extra_parameters` (which tracks search_path and IntervalStyle per client)."""
    return [
        Bouncer("pgbouncer", shutil.which("pgbouncer")),
        Bouncer(
            "pgbouncer-track-extra-parameters",
            current_binary(),
            "track_extra_parameters = IntervalStyle, search_path\n",
        ),
    ]


@contextmanager
def pgbouncer(server_dsn: str, pool_mode: str, bouncer: Bouncer | None = None) -> Iterator[str]:
    """A PgBouncer in `pool_mode` on a free loopback port; yields the DSN through it (same
    user, password and database as `server_dsn`)."""
    bouncer = bouncer or Bouncer("pgbouncer", shutil.which("pgbouncer"))
    if bouncer.binary is None:
        raise RuntimeError(f"no binary for {bouncer.label}")
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
        # Supabase's pooler passes the driver's start-up options through, as here.
        "ignore_startup_parameters = extra_float_digits\n"
        f"{bouncer.settings}"
    )
    user = _run_as(host)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
        os.chown(workdir / "pgbouncer.ini", entry.pw_uid, entry.pw_gid)
    proc = subprocess.Popen(
        [bouncer.binary, "-q", str(workdir / "pgbouncer.ini")],
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
