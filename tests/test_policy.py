"""Retry decisions: pure, on a pinned clock and a seeded random generator."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from daemon.core.errors import (
    PassKitError,
    PayloadTooLarge,
    PermanentPassKitError,
    TransientPassKitError,
    Unauthorized,
)
from daemon.engine.outcomes import Failed, RetryLater
from daemon.engine.retry import REQUEUE_BASE_SECONDS, GiveUp, RetryAt, backoff, decide, requeue

NOW = 1_000.0
SEED = 1234


def transient(status: int | None = 503, retry_after: float | None = None) -> TransientPassKitError:
    return TransientPassKitError("boom", status=status, retry_after=retry_after)


@pytest.mark.parametrize(
    ("error", "attempt", "expected"),
    [
        pytest.param(PermanentPassKitError("bad", status=400), 1, GiveUp("permanent"), id="400"),
        pytest.param(PermanentPassKitError("no", status=403), 1, GiveUp("permanent"), id="403"),
        pytest.param(PermanentPassKitError("gone", status=404), 1, GiveUp("permanent"), id="404"),
        pytest.param(PayloadTooLarge(10_001, 10_000), 1, GiveUp("permanent"), id="too-large"),
        pytest.param(Unauthorized(), 1, GiveUp("permanent"), id="401-twice"),
        pytest.param(PassKitError("unclassified"), 1, GiveUp("permanent"), id="unclassified"),
        pytest.param(transient(503), 5, GiveUp("attempts_exhausted"), id="503-last-attempt"),
        pytest.param(transient(None), 7, GiveUp("attempts_exhausted"), id="timeout-past-last"),
        pytest.param(
            transient(429, retry_after=31.0), 1, GiveUp("retry_after_beyond_cap"), id="429-long"
        ),
    ],
)
def test_gives_up_on_permanent_errors_exhausted_attempts_and_overlong_retry_after(
    error: PassKitError, attempt: int, expected: GiveUp
) -> None:
    assert decide(error, attempt, NOW, random.Random(SEED), max_attempts=5) == expected


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [
        pytest.param(1, 0.25, 0.5, id="first-retry-250-500ms"),
        pytest.param(2, 0.25, 1.0, id="second"),
        pytest.param(3, 0.25, 2.0, id="third"),
        pytest.param(6, 0.25, 16.0, id="sixth"),
        pytest.param(7, 0.25, 30.0, id="capped"),
        pytest.param(40, 0.25, 30.0, id="huge-attempt-capped"),
    ],
)
def test_transient_errors_back_off_exponentially_with_jitter_between_base_and_cap(
    attempt: int, low: float, high: float
) -> None:
    rng = random.Random(SEED)
    for _ in range(200):
        decision = decide(transient(), attempt, NOW, rng, max_attempts=100)
        assert isinstance(decision, RetryAt)
        assert low <= decision.delay <= high
        assert decision.at == NOW + decision.delay


@pytest.mark.parametrize(
    ("retry_after", "attempt", "expected_delay"),
    [
        pytest.param(5.0, 1, 5.0, id="longer-than-backoff-wins"),
        pytest.param(30.0, 1, 30.0, id="exactly-cap"),
        pytest.param(0.0, 1, None, id="zero-keeps-backoff"),
        pytest.param(0.1, 3, None, id="shorter-than-backoff-keeps-backoff"),
    ],
)
def test_retry_after_is_honoured_as_a_minimum(
    retry_after: float, attempt: int, expected_delay: float | None
) -> None:
    decision = decide(
        transient(429, retry_after), attempt, NOW, random.Random(SEED), max_attempts=8
    )
    plain = backoff(attempt, random.Random(SEED), base=0.25, cap=30.0)
    assert isinstance(decision, RetryAt)
    assert decision.delay == (expected_delay if expected_delay is not None else plain)
    assert decision.delay >= retry_after


def test_same_seed_same_decision() -> None:
    """Decisions depend only on their inputs: a pinned seed pins the delay."""
    first = decide(transient(), 3, NOW, random.Random(SEED), max_attempts=8)
    second = decide(transient(), 3, NOW, random.Random(SEED), max_attempts=8)
    assert first == second
    assert isinstance(first, RetryAt)
    assert first.delay == pytest.approx(1.941294, abs=1e-6)  # uniform(0.25, 2.0), seed 1234


def test_jitter_spreads_delays_of_simultaneous_failures() -> None:
    rng = random.Random(SEED)
    delays = {round(backoff(4, rng, base=0.25, cap=30.0), 3) for _ in range(50)}
    assert len(delays) > 40


def test_custom_base_and_cap_are_respected() -> None:
    decision = decide(transient(), 10, NOW, random.Random(SEED), max_attempts=20, base=1, cap=2)
    assert isinstance(decision, RetryAt)
    assert 1 <= decision.delay <= 2


def test_decisions_are_frozen_values() -> None:
    decision = RetryAt(at=1.0, delay=1.0)
    with pytest.raises(AttributeError):
        decision.delay = 2.0  # type: ignore[misc]


# --- queue level: a unit of work whose calls kept failing ------------------------------------

_NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempts", "max_attempts", "expect_retry"),
    [(1, 5, True), (4, 5, True), (5, 5, False), (9, 5, False), (1, 1, False)],
)
def test_requeue_retries_until_the_attempts_run_out(
    attempts: int, max_attempts: int, expect_retry: bool
) -> None:
    outcome = requeue(
        "503", attempts, _NOW, random.Random(attempts), max_attempts=max_attempts, cap=600.0
    )
    if expect_retry:
        assert isinstance(outcome, RetryLater) and outcome.error == "503"
        delay = (outcome.at - _NOW).total_seconds()
        assert REQUEUE_BASE_SECONDS <= delay <= min(600.0, REQUEUE_BASE_SECONDS * 2**attempts)
    else:
        assert isinstance(outcome, Failed)
        assert outcome.error == f"gave up after {attempts} attempts: 503"


def test_requeue_delay_is_capped() -> None:
    outcome = requeue("timeout", 30, _NOW, random.Random(1), max_attempts=100, cap=60.0)
    assert isinstance(outcome, RetryLater)
    assert (outcome.at - _NOW).total_seconds() <= 60.0
