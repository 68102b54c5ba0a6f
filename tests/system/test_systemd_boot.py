"""`systemd/loyaltyd.service` under a genuine systemd as PID 1, in a systemd-nspawn container.

The container is a minbase Debian with systemd, built once by debootstrap and cached
(LOYALTYD_SYSTEMD_ROOTFS, default /var/cache/loyaltyd-test/bookworm-rootfs); each run boots a
fresh copy. Inside, loyaltyd is installed the README's way: the `loyaltyd` system user, the
built wheel in a venv at /opt/loyaltyd, the env file at /etc/loyaltyd/loyaltyd.env, the unit
as shipped. The container shares the host's network, so it reaches the host's Postgres and a
fake PassKit on loopback.

Run as its own step (`make test-systemd`, marker `systemd`): it needs root, debootstrap and
systemd-nspawn, and skips with the reason where the machine cannot boot a container.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from daemon.testing.fakepasskit import FakePassKit, issued_ids
from tests.factories import make_pass, make_program
from tests.harness import API_KEY, API_SECRET, REPO

pytestmark = pytest.mark.systemd

ROOTFS = Path(os.environ.get("LOYALTYD_SYSTEMD_ROOTFS", "/var/cache/loyaltyd-test/bookworm-rootfs"))
MIRROR = os.environ.get("LOYALTYD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = "systemd,systemd-sysv,dbus,libnss-systemd,python3,python3-venv"
UNIT = "loyaltyd.service"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to boot a container"
    for tool in ("systemd-nspawn", "nsenter", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install systemd-container debootstrap)"
    return None


def _host_postgres() -> str:
    """An admin DSN over TCP, so the container reaches it through the shared network."""
    configured = os.environ.get("LOYALTYD_TEST_DATABASE_URL", "")
    dsn = configured if "@127.0.0.1" in configured or "@localhost" in configured else ""
    dsn = dsn or "postgresql://postgres@127.0.0.1:5432/postgres"

    async def reachable() -> bool:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except (OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    if not asyncio.run(reachable()):
        pytest.skip(f"no Postgres reachable over TCP at {dsn} for the container")
    return dsn


def _base_rootfs() -> Path:
    """The cached minbase rootfs, built once (about 2 minutes and 300 MB)."""
    ROOTFS.parent.mkdir(parents=True, exist_ok=True)
    with (ROOTFS.parent / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (ROOTFS / "usr" / "lib" / "systemd" / "systemd").exists():
            return ROOTFS
        building = ROOTFS.with_name(ROOTFS.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm",
             str(building), MIRROR],
            capture_output=True, text=True, timeout=1200, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            pytest.skip(f"debootstrap could not build a rootfs: {result.stdout[-500:]}")
        building.rename(ROOTFS)
    return ROOTFS


def _wheelhouse(into: Path) -> Path:
    """The built wheel and every dependency, for Debian's Python 3.11 in the container."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(REPO), "-w", str(into)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = into.glob("loyaltyd-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--python-version", "3.11",
         "--only-binary=:all:", "-d", str(into), str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    return into


@dataclass
class Container:
    root: Path
    nspawn: subprocess.Popen[bytes]
    pid1: int
    database_url: str
    http_port: int
    fake_port: int

    def run(self, *command: str, check: bool = True, timeout: float = 120) -> str:
        result = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-a", *command],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"{command} exited {result.returncode}: {result.stderr}")
        return result.stdout

    def show(self, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", UNIT, *(f"--property={p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def main_pid(self) -> int:
        return int(self.show("MainPID")["MainPID"])

    def journal(self) -> list[str]:
        out = self.run("journalctl", "-u", UNIT, "-o", "cat", "--no-pager")
        return out.splitlines()

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/readyz", timeout=2
            ) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def ensure_started(self) -> None:
        if self.show("ActiveState")["ActiveState"] != "active":
            self.run("systemctl", "reset-failed", UNIT, check=False)
            self.run("systemctl", "start", UNIT)

    def wait_for(self, check: Callable[[], bool], timeout: float, what: str) -> float:
        started = time.monotonic()
        while not check():
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{what}: not within {timeout} s")
            time.sleep(0.2)
        return time.monotonic() - started


def _env_file(database_url: str, http_port: int, fake_port: int) -> str:
    return "\n".join(
        [
            f"DATABASE_URL={database_url}",
            f"PASSKIT_API_KEY={API_KEY}",
            f"PASSKIT_API_SECRET={API_SECRET}",
            f"PASSKIT_BASE_URL=http://127.0.0.1:{fake_port}",
            "PASSKIT_RATE_LIMIT=0",
            f"LOYALTYD_HTTP_PORT={http_port}",
            "LOYALTYD_POLL_INTERVAL_SECONDS=1",
            "",
        ]
    )


_SETUP = """set -e
useradd --system --home-dir /var/lib/loyaltyd --shell /usr/sbin/nologin loyaltyd
python3 -m venv /opt/loyaltyd
/opt/loyaltyd/bin/pip install --quiet --no-index --find-links /wheelhouse loyaltyd
install -D -m 0600 /setup/loyaltyd.env /etc/loyaltyd/loyaltyd.env
install -m 0644 /setup/loyaltyd.service /etc/systemd/system/
/opt/loyaltyd/bin/loyaltyd --env-file /etc/loyaltyd/loyaltyd.env migrate
systemctl enable loyaltyd.service
"""


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    reason = _why_not()
    if reason is not None:
        pytest.skip(reason)
    admin = _host_postgres()
    base = _base_rootfs()
    work = Path(tempfile.mkdtemp(prefix="loyaltyd-systemd-"))
    database = f"loyaltyd_systemd_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(admin, f'CREATE DATABASE "{database}"'))
    database_url = admin.rsplit("/", 1)[0] + f"/{database}"
    nspawn: subprocess.Popen[bytes] | None = None
    try:
        root = work / "root"
        subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(root)], check=True)
        setup = work / "setup"
        setup.mkdir()
        http_port, fake_port = _free_port(), _free_port()
        (setup / "loyaltyd.env").write_text(_env_file(database_url, http_port, fake_port))
        shutil.copy(REPO / "systemd" / UNIT, setup / UNIT)
        wheels = _wheelhouse(work / "wheels")
        subprocess.run(
            ["systemd-nspawn", "--quiet", "-D", str(root), "--register=no", "--keep-unit",
             f"--bind-ro={wheels}:/wheelhouse", f"--bind-ro={setup}:/setup",
             "/bin/sh", "-c", _SETUP],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        nspawn = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "-D", str(root), "--register=no", "--keep-unit",
             "--boot", "--console=passive"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        pid1 = _container_init(nspawn)
        ct = Container(root, nspawn, pid1, database_url, http_port, fake_port)
        # `is-system-running --wait` returns once boot is over (loyaltyd is enabled, so up).
        state = ""
        deadline = time.monotonic() + 120
        while state.strip() not in {"running", "degraded"} and time.monotonic() < deadline:
            state = ct.run("systemctl", "is-system-running", "--wait", check=False, timeout=120)
            time.sleep(0.2)
        assert state.strip() in {"running", "degraded"}, f"boot did not finish: {state!r}"
        yield ct
    finally:
        if nspawn is not None:
            nspawn.send_signal(signal.SIGTERM)  # nspawn powers the container off
            try:
                nspawn.wait(timeout=60)
            except subprocess.TimeoutExpired:
                nspawn.kill()
                nspawn.wait()
        shutil.rmtree(work, ignore_errors=True)
        asyncio.run(_admin(admin, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def _container_init(nspawn: subprocess.Popen[bytes]) -> int:
    """The host PID of the container's PID 1, once it is systemd."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        children = subprocess.run(
            ["pgrep", "-P", str(nspawn.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        for child in children:
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    return int(child)
            except OSError:
                continue
        if nspawn.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited with {nspawn.returncode}")
        time.sleep(0.1)
    raise AssertionError("the container's systemd did not start")


async def _admin(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


# --- the unit, step by step (in file order: one container) ---------------------------------


def test_enabled_it_came_up_at_boot_and_restart_returns_only_once_ready(
    container: Container,
) -> None:
    """Type=notify: `systemctl start` (here `restart`) returns after READY=1, so the daemon
    answers /readyz 200 the moment it returns."""
    assert container.show("ActiveState")["ActiveState"] == "active"
    container.run("systemctl", "restart", UNIT)
    assert container.ready(), "systemctl returned before the daemon was ready"
    journal = container.journal()
    ready_at = max(i for i, line in enumerate(journal) if "sd_notify_ready" in line)
    started_at = max(i for i, line in enumerate(journal) if line.startswith("Started "))
    assert ready_at < started_at, "systemd declared it started before READY=1"


def test_logs_reach_the_journal_as_json(container: Container) -> None:
    own = [line for line in container.journal() if line.startswith("{")]
    events = {json.loads(line)["event"] for line in own}
    assert {"daemon_ready", "listener_connected", "sd_notify_ready"} <= events


async def test_hardening_is_in_force_and_loyaltyd_works_under_it(container: Container) -> None:
    container.ensure_started()
    pid = container.main_pid()
    status = container.run("cat", f"/proc/{pid}/status")
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Seccomp"].strip() == "2", "the syscall filter is not applied"
    assert fields["NoNewPrivs"].strip() == "1"
    assert int(fields["CapEff"].strip(), 16) == 0
    assert fields["Uid"].split()[0] != "0", "runs as root"
    in_service = ["nsenter", "-t", str(pid), "-m", "--"]
    read_only = container.run(*in_service, "sh", "-c", "touch /usr/x 2>&1", check=False)
    assert "Read-only file system" in read_only, "ProtectSystem=strict"
    container.run(*in_service, "sh", "-c", "touch /tmp/loyaltyd-private-tmp-probe")
    assert "loyaltyd-private-tmp-probe" not in container.run("ls", "/tmp"), "PrivateTmp"

    # …and it still syncs a pass to PassKit under all of it.
    fake = FakePassKit(API_KEY, API_SECRET, issued=issued_ids("pk", "sd-"))
    await fake.start(port=container.fake_port)
    pool = await asyncpg.create_pool(container.database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        program = await make_program(pool)
        pass_id = await make_pass(pool, program, points=0)
        pk = await pool.fetchval(
            "SELECT passkit_internal_id FROM passes_master WHERE id = $1", pass_id
        )
        await pool.execute(
            "SELECT process_membership_transaction($1, 7, 'EARN', 'Under systemd', NULL)", pass_id
        )
        deadline = time.monotonic() + 15
        while not any(r.pass_id == pk and r.status == 200 for r in fake.requests):
            assert time.monotonic() < deadline, "the pass never reached PassKit"
            await asyncio.sleep(0.1)
    finally:
        await pool.close()
        await fake.stop()


def test_a_crash_restarts(container: Container) -> None:
    container.ensure_started()
    before = int(container.show("NRestarts")["NRestarts"])
    pid = container.main_pid()
    container.run("sh", "-c", f"kill -SEGV {pid}")
    container.wait_for(
        lambda: (
            int(container.show("NRestarts")["NRestarts"]) == before + 1
            and container.main_pid() not in (0, pid)
            and container.ready()
        ),
        timeout=60,
        what="restart after a crash",
    )


def test_a_wedged_event_loop_is_killed_by_the_watchdog_and_restarted(
    container: Container,
) -> None:
    """SIGSTOP freezes the process the way a blocked event loop would: no WATCHDOG=1 for
    WatchdogSec (30 s), so systemd aborts it and starts it again."""
    container.ensure_started()
    before = int(container.show("NRestarts")["NRestarts"])
    pid = container.main_pid()
    container.run("sh", "-c", f"kill -STOP {pid}")
    container.wait_for(
        lambda: (
            int(container.show("NRestarts")["NRestarts"]) == before + 1
            and container.main_pid() not in (0, pid)
        ),
        timeout=90,
        what="watchdog restart",
    )
    assert any("Watchdog timeout" in line for line in container.journal())
    container.wait_for(container.ready, timeout=30, what="ready after the watchdog restart")


def test_stop_drains_within_the_timeout_exits_0_and_adds_no_restart(
    container: Container,
) -> None:
    container.ensure_started()
    before = int(container.show("NRestarts")["NRestarts"])
    started = time.monotonic()
    container.run("systemctl", "stop", UNIT)
    took = time.monotonic() - started
    props = container.show("ActiveState", "Result", "ExecMainStatus", "NRestarts")
    assert props["ActiveState"] == "inactive"
    assert props["Result"] == "success"
    assert props["ExecMainStatus"] == "0"
    assert int(props["NRestarts"]) == before
    assert took < 45, f"stop took {took:.1f} s, TimeoutStopSec is 45 s"
    time.sleep(6)  # RestartSec=5s: nothing comes back on its own
    assert container.show("ActiveState")["ActiveState"] == "inactive"
    assert any('"daemon_stopped"' in line for line in container.journal())
