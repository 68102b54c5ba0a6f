"""PassKit seen as down or up: one warning a minute while every request fails, not one per
request, a gauge for /metrics, and a line when it recovers."""

from __future__ import annotations

import contextlib

from structlog.testing import capture_logs

from daemon.core.metrics import Metrics
from daemon.passkit.health import DOWN_AFTER, PassKitHealth


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _gauge(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("loyaltyd_passkit_up")


def test_an_outage_warns_once_a_minute_and_recovery_is_logged() -> None:
    clock, metrics = Clock(), Metrics()
    health = PassKitHealth(metrics, clock=clock)
    with capture_logs() as logs:
        for _ in range(DOWN_AFTER - 1):
            health.failed("set_points", "503")
        assert not health.down and _gauge(metrics) == 1.0
        for second in range(180):  # three minutes, ten failing requests a second
            clock.now = float(second)
            for _ in range(10):
                health.failed("set_points", "503 unavailable")
        assert health.down and _gauge(metrics) == 0.0
        clock.now = 200.0
        health.answered()
    warnings = [e for e in logs if e["event"] == "passkit_unavailable"]
    assert len(warnings) == 3, [w["down_seconds"] for w in warnings]
    assert warnings[0]["last_error"] == "set_points: 503 unavailable"
    assert warnings[1]["failed_requests"] == 600
    [recovered] = [e for e in logs if e["event"] == "passkit_recovered"]
    assert recovered["down_seconds"] == 200.0
    assert not health.down and _gauge(metrics) == 1.0


def test_scattered_failures_between_answers_are_not_an_outage() -> None:
    health = PassKitHealth(Metrics(), clock=Clock())
    with capture_logs() as logs:
        for _ in range(100):
            for _ in range(DOWN_AFTER - 1):
                health.failed("set_points", "503")
            health.answered()
    assert not health.down
    assert [e for e in logs if e["event"] == "passkit_unavailable"] == []


async def test_a_fenced_daemons_probe_says_not_yet_instead_of_crashing() -> None:
    """While PassKit is down and the database unreachable (the daemon fenced), the outage
    watch's probe must not raise: it is supervised, and an escape would stop the daemon."""
    from daemon.passkit.client import PassKitClient
    from tests.passkit_fixtures import make_settings

    client = PassKitClient(make_settings(passkit_api_key="k", passkit_api_secret="s" * 20))
    client.fence = lambda: True
    async with client:
        assert await client.probe() is False


async def test_rate_limiting_is_passkit_answering_not_an_outage() -> None:
    """A run of 429s (a busy account) does not hold everything back: each row keeps the
    Retry-After it was given."""
    from daemon.core.errors import TransientPassKitError
    from daemon.passkit.client import PassKitClient
    from tests.harness import API_KEY, API_SECRET, fake_passkit
    from tests.passkit_fixtures import make_settings

    async with fake_passkit() as fake:
        fake.fail_next(*([429] * 20))
        settings = make_settings(fake.url, passkit_api_key=API_KEY, passkit_api_secret=API_SECRET)
        async with PassKitClient(settings) as client:
            for _ in range(10):
                with contextlib.suppress(TransientPassKitError):
                    await client.set_points("pk-1", 5)
            assert not client.health.down
