"""`loyaltyd run` on its embedded default turns on HTTP and the console with secrets kept in
the data directory; with DATABASE_URL set (production) it adds nothing and prints nothing.
(The printed block itself is checked on the installed wheel: tests/system.)"""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from daemon.cli.local import API_KEY_FILE, CONSOLE_SECRET_FILE, local_settings
from daemon.core.config import Settings
from tests.harness import DaemonProcess, wait_until
from tests.passkit_fixtures import settings_of


def _settings(data_dir: Path, **values: Any) -> Settings:
    return settings_of({"loyaltyd_data_dir": data_dir, **values})


def test_a_local_run_serves_http_on_8080_with_the_console_and_kept_secrets(
    tmp_path: Path,
) -> None:
    local = local_settings(_settings(tmp_path))
    assert local.loyaltyd_http_host == "127.0.0.1"
    assert local.loyaltyd_http_port == 8080
    assert local.loyaltyd_console
    for name in (API_KEY_FILE, CONSOLE_SECRET_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    key = (tmp_path / API_KEY_FILE).read_text().strip()
    assert [k.get_secret_value() for k in local.loyaltyd_api_keys] == [key]
    assert local.loyaltyd_console_secret is not None
    again = local_settings(_settings(tmp_path))
    assert again.loyaltyd_api_keys == local.loyaltyd_api_keys, "made once, then kept"
    assert again.loyaltyd_console_secret == local.loyaltyd_console_secret


def test_what_the_user_set_stays_as_set(tmp_path: Path) -> None:
    chosen = _settings(
        tmp_path,
        loyaltyd_http_port=9191,
        loyaltyd_console=False,
        loyaltyd_api_keys="my-own-key-that-is-long-enough",
    )
    local = local_settings(chosen)
    assert local.loyaltyd_http_port == 9191
    assert not local.loyaltyd_console
    assert [k.get_secret_value() for k in local.loyaltyd_api_keys] == [
        "my-own-key-that-is-long-enough"
    ]
    assert not (tmp_path / API_KEY_FILE).exists()


@pytest.mark.slow
async def test_with_database_url_run_prints_nothing_and_serves_no_http(
    database_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "daemon.log"
    daemon = DaemonProcess(database_url, {"PASSKIT_API_KEY": ""}, log)
    try:
        await wait_until(lambda: '"daemon_ready"' in daemon.log_text(), timeout=30)
        await asyncio.sleep(0.5)
        code, _ = await daemon.terminate_timed(30)
    finally:
        daemon.stop_now()
    assert code == 0
    text = log.read_text()
    events = [json.loads(line)["event"] for line in text.splitlines() if line.startswith("{")]
    others = [line for line in text.splitlines() if line and not line.startswith("{")]
    assert "http_server_started" not in events
    assert others == [], "nothing but log events: no welcome block in production"
    assert not (tmp_path / ".loyaltyd").exists()
