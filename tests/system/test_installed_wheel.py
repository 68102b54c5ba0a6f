"""loyaltyd as its users install it: the wheel, `pip install`ed into a fresh virtualenv
outside the checkout, run from another directory, configured by an --env-file.

Nothing here imports the checkout: every step is the installed `loyaltyd` script.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.ops.test_http_daemon import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", str(REPO), "-w", str(out)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("loyaltyd-*.whl")
    return wheel


@pytest.fixture(scope="session")
def installed(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The `loyaltyd` script of a fresh virtualenv holding the wheel (and the embedded extra)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", f"{built_wheel}[embedded]"],
        check=True,
        capture_output=True,
    )
    yield venv / "bin" / "loyaltyd"


def _loyaltyd(
    script: Path, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(script), *args],
        cwd=cwd,
        env={**_clean_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _clean_env() -> dict[str, str]:
    """The environment without the checkout on sys.path and without our test settings."""
    keep = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"}
    return {k: v for k, v in os.environ.items() if k in keep} | {"LOYALTYD_LOG_FORMAT": "json"}


def test_the_wheel_carries_every_migration_and_query(built_wheel: Path) -> None:
    names = set(zipfile.ZipFile(built_wheel).namelist())
    migrations = sorted(p.name for p in (REPO / "sql").glob("[0-9]*.sql"))
    queries = sorted(p.name for p in (REPO / "daemon" / "store" / "queries").glob("*.sql"))
    assert migrations and queries
    assert {f"daemon/migrations/{m}" for m in migrations} <= names
    assert {f"daemon/store/queries/{q}" for q in queries} <= names
    assert not any(n.startswith("tests/") for n in names)
    packages = sorted(
        str(p.parent.relative_to(REPO)) for p in (REPO / "daemon").rglob("__init__.py")
    )
    assert [p for p in packages if f"{p}/__init__.py" not in names] == [], "pyproject packages"


def test_installed_loyaltyd_migrates_and_reports_from_any_directory(
    installed: Path, fresh_database: Callable[..., Coroutine[Any, Any, str]], tmp_path: Path
) -> None:
    """On an empty database, configured only by --env-file, from a directory that is not the
    checkout: migrate applies every migration, again applies none, --check passes, status
    reads the result."""
    dsn = asyncio.run(fresh_database())
    env_file = tmp_path / "loyaltyd.env"
    env_file.write_text(f"DATABASE_URL={dsn}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def loyaltyd(*args: str) -> subprocess.CompletedProcess[str]:
        return _loyaltyd(installed, "--env-file", str(env_file), *args, cwd=elsewhere)

    first = loyaltyd("migrate")
    assert first.returncode == 0, first.stderr
    assert _event(first.stderr, "migrate_finished")["count"] == len(
        list((REPO / "sql").glob("[0-9]*.sql"))
    )
    second = loyaltyd("migrate")
    assert second.returncode == 0, second.stderr
    assert _event(second.stderr, "migrate_finished")["count"] == 0
    check = loyaltyd("migrate", "--check")
    assert check.returncode == 0, check.stderr
    status = loyaltyd("status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["campaigns"] == []


def _event(stderr: str, name: str) -> dict[str, Any]:
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    found = [e for e in events if e.get("event") == name]
    assert found, f"no {name} event in:\n{stderr}"
    event: dict[str, Any] = found[-1]
    return event


def test_installed_loyaltyd_runs_on_its_embedded_default_until_sigterm(
    installed: Path, tmp_path: Path
) -> None:
    """No DATABASE_URL, no PassKit keys: embedded Postgres in ./.loyaltyd, mock mode, HTTP on
    127.0.0.1 with the console; once ready it prints where to look, and each thing it points
    to answers: the API with the generated key, the one-time console link. SIGTERM exits 0;
    `status` then works on the same embedded data."""
    port = free_port()
    with subprocess.Popen(
        [str(installed), "run"],
        cwd=tmp_path,
        env=_clean_env() | {"LOYALTYD_HTTP_PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            lines = _read_until(proc, "daemon_ready", timeout=90)
            assert any("passkit_mock_mode" in line for line in lines), lines
            block = _read_block(proc)
            _check_what_the_block_points_to(block, tmp_path, port)
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)  # drains and closes its pipes
            assert proc.returncode == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert (tmp_path / ".loyaltyd" / "postgres" / "PG_VERSION").exists()
    status = _loyaltyd(installed, "status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "Pass syncs" in status.stdout


def _read_block(proc: subprocess.Popen[str]) -> str:
    """What `run` prints on stdout once ready, up to its `stop` line."""
    assert proc.stdout is not None
    lines: list[str] = []
    while not lines or not lines[-1].lstrip().startswith("stop"):
        line = proc.stdout.readline()
        assert line, f"stdout ended before the block did: {lines}"
        lines.append(line)
    return "".join(lines)


def _check_what_the_block_points_to(block: str, cwd: Path, port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    assert "data     ./.loyaltyd/" in block
    assert "mock mode: nothing leaves this machine" in block
    assert f"console  {base}/console/" in block
    link = re.search(rf"{re.escape(base)}/console/invite/\S+", block)
    assert link is not None, block
    assert 'export KEY="$(cat ./.loyaltyd/api-key)"' in block
    key = (cwd / ".loyaltyd" / "api-key").read_text().strip()
    assert stat.S_IMODE((cwd / ".loyaltyd" / "api-key").stat().st_mode) == 0o600
    nowhere = f"{base}/api/campaigns/00000000-0000-4000-8000-000000000000"
    assert _get(nowhere, {"X-API-Key": key}) == 404
    assert _get(nowhere, {}) == 401
    assert _get(link.group(0), {}) == 200  # the page where the local admin picks a password
    assert _get(f"{base}/readyz", {}) == 200


def _get(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_installed_loyaltyd_demo_finishes(installed: Path, tmp_path: Path) -> None:
    result = _loyaltyd(installed, "demo", "--members", "200", cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "summary" in result.stdout.lower()


def _read_until(proc: subprocess.Popen[str], event: str, timeout: float) -> list[str]:
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if event in line:
            return seen
    raise AssertionError(f"no {event} within {timeout} s (exit {proc.poll()}):\n{''.join(seen)}")
