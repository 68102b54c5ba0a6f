"""Settings: contract names, bounds, mock mode, secrets for redaction."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from daemon.core.config import Settings


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg,arg-type]


@pytest.mark.parametrize(
    ("concurrency", "rate", "slots", "expected"),
    [
        (20, 0, 0, 40),  # no limit: twice the concurrency
        (20, 50, 0, 40),  # the limit allows more than that
        (100, 10, 0, 20),  # two seconds at 10/s
        (100, 0.2, 0, 1),  # never zero
        (20, 0, 7, 7),  # set by hand
        (20, 2, 7, 4),  # set by hand, still capped by the limit
    ],
)
def test_worker_slots_hold_at_most_two_seconds_of_rate_limited_sends(
    concurrency: int, rate: float, slots: int, expected: int
) -> None:
    settings = _settings(
        passkit_max_concurrency=concurrency,
        passkit_rate_limit=rate,
        loyaltyd_worker_slots=slots,
        passkit_metadata_mode="merge",  # one request a message
    )
    assert settings.worker_slots == expected


def test_a_message_that_reads_first_costs_two_requests_in_mock_mode_too() -> None:
    """Mock mode reads before it writes, as PassKit mode does: slots count both requests."""
    settings = _settings(passkit_max_concurrency=100, passkit_rate_limit=10)
    assert settings.passkit_mock_mode and settings.requests_per_message == 2
    assert settings.worker_slots == 10


@pytest.mark.parametrize(("key", "secret"), [("", "s"), ("k", ""), (None, "s"), ("  ", "s")])
def test_missing_or_empty_credentials_mean_mock_mode(key: str | None, secret: str) -> None:
    assert _settings(passkit_api_key=key, passkit_api_secret=secret).passkit_mock_mode


def test_comma_separated_lists_and_secrets_for_redaction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOYALTYD_API_KEYS", "alpha-key, beta-key,")
    monkeypatch.setenv("LOYALTYD_CSV_ALLOWED_HOSTS", "files.example.com,cdn.example.com")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:db-password@host/db")
    monkeypatch.setenv("PASSKIT_API_SECRET", "the-secret")
    monkeypatch.setenv("PASSKIT_API_KEY", "the-key")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert [k.get_secret_value() for k in settings.loyaltyd_api_keys] == ["alpha-key", "beta-key"]
    assert settings.loyaltyd_csv_allowed_hosts == ["files.example.com", "cdn.example.com"]
    assert set(settings.secrets()) == {
        "the-secret",
        "the-key",
        "alpha-key",
        "beta-key",
        "db-password",
    }
    assert not settings.passkit_mock_mode


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("passkit_max_concurrency", 0),
        ("passkit_rate_limit", -1),
        ("passkit_base_url", "ftp://api.pub1.passkit.io"),
        ("loyaltyd_http_port", 70000),
        ("passkit_auth_scheme", "basic"),
    ],
)
def test_out_of_bounds_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        _settings(**{field: value})
