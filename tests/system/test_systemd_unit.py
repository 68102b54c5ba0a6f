"""systemd/loyaltyd.service: systemd's own checker accepts it, it is a hardened notify service
that restarts on failure and waits long enough for the drain, and the environment file
template names only real settings."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from daemon.core.config import Settings
from daemon.ops.http import SHUTDOWN_SECONDS

SYSTEMD = Path(__file__).resolve().parent.parent.parent / "systemd"
UNIT = SYSTEMD / "loyaltyd.service"
ENV_EXAMPLE = SYSTEMD / "loyaltyd.env.example"
INSTALLED_EXEC = "/opt/loyaltyd/bin/loyaltyd"
# Worker._final_flush waits this long for the last outcomes after the drain.
FINAL_FLUSH_SECONDS = 10

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian/Ubuntu: apt-get install systemd)",
)


def unit() -> dict[str, dict[str, list[str]]]:
    """Section -> key -> values (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(key: str) -> str:
    [value] = unit()["Service"][key]
    return value


def seconds(span: str) -> float:
    match = re.fullmatch(r"(\d+)\s*(s|sec|min|)", span)
    assert match, f"unexpected time span {span!r}"
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


def _installable_copy(tmp_path: Path) -> Path:
    """The unit as shipped, but with ExecStart pointing at an executable that exists here
    (verify refuses a missing binary, and /opt/loyaltyd is not installed on a test host)."""
    stub = tmp_path / "bin" / "loyaltyd"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text()
    assert text.count(f"ExecStart={INSTALLED_EXEC} ") == 1
    copy = tmp_path / "loyaltyd.service"
    copy.write_text(text.replace(f"ExecStart={INSTALLED_EXEC} ", f"ExecStart={stub} "))
    return copy


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    copy = _installable_copy(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    complaints = [
        line for line in (result.stdout + result.stderr).splitlines() if "loyaltyd" in line
    ]
    # unknown keys and bad values are only warnings (exit 0): they must not appear either
    assert result.returncode == 0 and complaints == [], result.stdout + result.stderr


@needs_systemd_analyze
def test_systemd_rates_the_units_exposure_ok(tmp_path: Path) -> None:
    copy = _installable_copy(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in result.stderr and result.returncode != 0:
        pytest.skip("this systemd-analyze cannot rate a unit file offline (systemd < 250)")
    match = re.search(r"Overall exposure level for loyaltyd\.service: ([\d.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


def test_the_unit_is_a_notify_service_with_a_watchdog_that_restarts_on_failure() -> None:
    assert service("Type") == "notify"
    assert service("NotifyAccess") == "main"
    assert service("Restart") == "on-failure"
    assert seconds(service("WatchdogSec")) >= 10
    assert service("ExecStart") == f"{INSTALLED_EXEC} run"
    assert service("KillMode") == "mixed"  # SIGTERM to the daemon, not to its children first


def test_the_unit_waits_longer_than_the_drain_before_killing() -> None:
    grace = Settings.model_fields["loyaltyd_shutdown_grace_seconds"].default
    drain = grace + FINAL_FLUSH_SECONDS + SHUTDOWN_SECONDS
    assert seconds(service("TimeoutStopSec")) > drain


def test_the_unit_keeps_secrets_in_an_environment_file_and_runs_as_its_own_user() -> None:
    assert service("EnvironmentFile") == "/etc/loyaltyd/loyaltyd.env"
    assert service("User") == service("Group") == "loyaltyd"
    environment = " ".join(unit()["Service"].get("Environment", []))
    assert "SECRET" not in environment and "DATABASE_URL" not in environment


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("UMask", "0077"),
    ],
)
def test_the_unit_is_hardened(key: str, value: str) -> None:
    assert service(key) == value


def test_the_environment_file_template_names_only_real_settings() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    keys = re.findall(r"^#?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE)
    assert keys, "the template lists settings"
    assert sorted(set(keys) - fields) == []
    assert {"DATABASE_URL", "PASSKIT_API_KEY", "PASSKIT_API_SECRET", "LOYALTYD_API_KEYS"} <= set(
        keys
    )


def test_the_environment_file_template_carries_no_secret() -> None:
    values = dict(
        re.findall(r"^(PASSKIT_API_\w+|LOYALTYD_API_KEYS)=(.*)$", ENV_EXAMPLE.read_text(), re.M)
    )
    assert values == {"PASSKIT_API_KEY": "", "PASSKIT_API_SECRET": "", "LOYALTYD_API_KEYS": ""}
