"""The embedded Postgres is reachable by its owner only: no TCP, no trust, a 0700 socket
directory of the server's user, a 0600 password file, and no directory widened for others.

As root (where it matters most) another local user, `nobody`, tries to connect and cannot.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
from structlog.testing import capture_logs

import daemon.store.acl as acl
import daemon.store.embedded as embedded_module
from daemon.store.embedded import SERVER_USER, EmbeddedPostgres

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (another user, ACLs)")
LONG_NAME = "d" * 80  # too long for a socket path inside it: the socket goes elsewhere


@pytest.fixture
def private_parent() -> Iterator[Path]:
    """A 0700 directory, like a home directory, above the data directory."""
    parent = Path(tempfile.mkdtemp(prefix="loyaltyd-private-"))
    parent.chmod(0o700)
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def embedded(private_parent: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(private_parent / LONG_NAME, remove_on_stop=True)
    server.start()
    yield server
    server.stop()


def _socket_dir(dsn: str) -> Path:
    return Path(parse_qs(urlsplit(dsn).query)["host"][0])


def _others_access(paths: list[Path]) -> dict[Path, tuple[int, int]]:
    """(owning group's, everyone else's) rwx bits, from the ACL where there is one: with an
    ACL the mode's group bits show the mask, not the owning group's access."""
    found = {}
    for path in paths:
        mode = path.stat().st_mode
        group, other = (mode >> 3) & 0o7, mode & 0o7
        try:
            entries = acl.decode(os.getxattr(path, acl.XATTR))
            group = entries[(acl.GROUP_OBJ, 0xFFFFFFFF)]
        except OSError:
            pass
        found[path] = (group, other)
    return found


async def test_no_tcp_no_trust_and_a_password_is_required(embedded: EmbeddedPostgres) -> None:
    dsn = embedded.dsn("postgres")
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SHOW listen_addresses") == ""
        methods = await conn.fetch("SELECT DISTINCT auth_method FROM pg_hba_file_rules")
        assert {m["auth_method"] for m in methods} <= {"scram-sha-256", "reject"}
        assert await conn.fetchval("SHOW unix_socket_permissions") == "0700"
    finally:
        await conn.close()
    without_password = dsn.replace(f":{embedded.password}@", "@")
    with pytest.raises(
        (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)
    ):
        await asyncpg.connect(without_password, password="")


def test_the_password_file_is_the_owners_alone(embedded: EmbeddedPostgres) -> None:
    st = embedded.password_file.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    assert embedded.password and embedded.password in embedded.password_file.read_text()


def test_a_long_data_path_puts_the_socket_in_a_private_directory(
    embedded: EmbeddedPostgres,
) -> None:
    socket_dir = _socket_dir(embedded.dsn("postgres"))
    assert socket_dir != embedded.pgdata, "the data path is too long for a socket"
    st = socket_dir.stat()
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == embedded.pgdata.stat().st_uid, "owned by the server's user"
    assert stat.S_IMODE(embedded.pgdata.stat().st_mode) == 0o700


def test_stop_removes_the_socket_directory_and_temporary_data(private_parent: Path) -> None:
    server = EmbeddedPostgres(private_parent / LONG_NAME, remove_on_stop=True)
    socket_dir = _socket_dir(server.start())
    server.stop()
    assert not socket_dir.exists()
    assert not (private_parent / LONG_NAME).exists()


def test_a_second_process_joins_the_running_server(embedded: EmbeddedPostgres) -> None:
    joined = EmbeddedPostgres(embedded.root)
    assert joined.start() == embedded.dsn("postgres")
    joined.stop()  # did not start it: leaves it running
    assert (embedded.pgdata / "postmaster.pid").exists()


@as_root
def test_another_local_user_cannot_connect(embedded: EmbeddedPostgres) -> None:
    """The reproduction: as root, a long data path; then `nobody` tries psql on the socket."""
    socket_dir = _socket_dir(embedded.dsn("postgres"))
    psql = shutil.which("psql")
    if psql is not None:
        command = [
            psql,
            "-h",
            str(socket_dir),
            "-U",
            "postgres",
            "-w",
            "-c",
            "SELECT 1",
            "postgres",
        ]
    else:
        command = ["/usr/bin/python3", "-c", _RAW_CONNECT.format(str(socket_dir / ".s.PGSQL.5432"))]
    result = subprocess.run(
        ["runuser", "-u", "nobody", "--", *command], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0, result.stdout
    assert "Permission denied" in result.stderr, result.stderr


@as_root
def test_no_directory_is_widened_for_others(private_parent: Path) -> None:
    """Modes above the data directory and the binaries stay as they were; the server's user
    gets a traverse-only ACL entry where it needs one."""
    from daemon.store.embedded import binaries

    watched = [private_parent, *private_parent.parents, *binaries().parents]
    before = _others_access(watched)
    server = EmbeddedPostgres(private_parent / "data", remove_on_stop=True)
    with capture_logs() as logs:
        server.start()
    try:
        granted = [e for e in logs if e["event"] == "embedded_postgres_traverse_granted"]
        assert [e["log_level"] for e in granted] == ["info"], "a grant is news, not a warning"
        assert str(private_parent) in granted[0]["directories"]
        assert _others_access(watched) == before
        entries = acl.decode(os.getxattr(private_parent, acl.XATTR))
        import pwd

        uid = pwd.getpwnam(SERVER_USER).pw_uid
        assert entries[(acl.USER, uid)] == acl.EXECUTE
        assert entries[(acl.OTHER, 0xFFFFFFFF)] == 0
        assert entries[(acl.GROUP_OBJ, 0xFFFFFFFF)] == 0
    finally:
        server.stop()


def test_an_acl_round_trips() -> None:
    entries = {
        (acl.USER_OBJ, 0xFFFFFFFF): 7,
        (acl.USER, 999): 1,
        (acl.GROUP_OBJ, 0xFFFFFFFF): 5,
        (acl.MASK, 0xFFFFFFFF): 5,
        (acl.OTHER, 0xFFFFFFFF): 0,
    }
    assert acl.decode(acl.encode(entries)) == entries


def test_data_of_another_postgres_version_is_refused(private_parent: Path) -> None:
    root = private_parent / "data"
    (root / "postgres").mkdir(parents=True)
    (root / "postgres" / "PG_VERSION").write_text("16\n")
    (root / "postgres.password").write_text("x\n")
    from daemon.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"from Postgres 16.*move that directory aside"):
        EmbeddedPostgres(root).start()


_RAW_CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect({!r})
except PermissionError as e:
    sys.exit("Permission denied")
"""


@as_root
def test_creating_the_server_user_is_said_in_one_plain_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = "loyaltyd-t" + os.urandom(3).hex()
    try:
        embedded_module._create_system_user(name)
        err = capsys.readouterr().err
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"loyaltyd: created the system user '{name}'")
    assert f"userdel {name}" in lines[0]
