"""The one retry decision: pure, on a given age and a seeded random generator."""

from __future__ import annotations

import math
import random

import pytest

from daemon.core.errors import (
    PassKitError,
    PayloadTooLarge,
    PermanentPassKitError,
    TransientError,
    TransientPassKitError,
    Unauthorized,
    WorkRefused,
)
from daemon.engine.outcomes import Failed, RetryLater
from daemon.engine.retry import RetryPolicy, backoff, decide

SEED = 1234
POLICY = RetryPolicy(base=5.0, cap=600.0, max_age=86_400.0)


def transient(status: int | None = 503, retry_after: float | None = None) -> TransientPassKitError:
    return TransientPassKitError("boom", status=status, retry_after=retry_after)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(PermanentPassKitError("bad", status=400), id="400"),
        pytest.param(PermanentPassKitError("no", status=403), id="403"),
        pytest.param(PermanentPassKitError("gone", status=404), id="404"),
        pytest.param(PayloadTooLarge(10_001, 10_000), id="too-large"),
        pytest.param(Unauthorized(), id="401-twice"),
        pytest.param(PassKitError("unclassified"), id="unclassified"),
        pytest.param(WorkRefused("no PassKit id"), id="refused-by-the-handler"),
    ],
)
def test_permanent_errors_fail_at_once_with_their_message(error: PassKitError) -> None:
    assert decide(error, 1, 0.0, random.Random(SEED), POLICY) == Failed(str(error))


@pytest.mark.parametrize("attempts", [1, 5, 25, 100, 10_000])
def test_transient_errors_are_retried_whatever_the_attempt_count(attempts: int) -> None:
    """Only the age ends transient work: an outage of any number of tries heals."""
    outcome = decide(transient(), attempts, 3_600.0, random.Random(SEED), POLICY)
    assert isinstance(outcome, RetryLater)
    assert outcome.error == "boom"


@pytest.mark.parametrize(
    ("owed_seconds", "expect_retry"),
    [(0.0, True), (86_399.0, True), (86_400.0, False), (200_000.0, False)],
)
def test_transient_work_fails_once_it_is_older_than_the_maximum_age(
    owed_seconds: float, expect_retry: bool
) -> None:
    outcome = decide(transient(), 40, owed_seconds, random.Random(SEED), POLICY)
    if expect_retry:
        assert isinstance(outcome, RetryLater)
    else:
        assert isinstance(outcome, Failed)
        assert outcome.error.startswith("gave up after 40 attempts over ")
        assert outcome.error.endswith(": boom")


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [
        pytest.param(1, 5.0, 10.0, id="first"),
        pytest.param(2, 5.0, 20.0, id="second"),
        pytest.param(6, 5.0, 320.0, id="sixth"),
        pytest.param(7, 5.0, 600.0, id="capped"),
        pytest.param(40, 5.0, 600.0, id="huge-attempt-capped"),
    ],
)
def test_transient_errors_back_off_exponentially_with_jitter_between_base_and_cap(
    attempt: int, low: float, high: float
) -> None:
    rng = random.Random(SEED)
    delays = []
    for _ in range(200):
        outcome = decide(transient(), attempt, 0.0, rng, POLICY)
        assert isinstance(outcome, RetryLater)
        assert low <= outcome.delay <= high
        delays.append(outcome.delay)
    assert max(delays) > (low + high) / 2 > min(delays)  # jittered over the range


@pytest.mark.parametrize(
    ("retry_after", "attempt", "expected_delay"),
    [
        pytest.param(90.0, 1, 90.0, id="longer-than-backoff-wins"),
        pytest.param(3_600.0, 1, 3_600.0, id="beyond-the-cap-still-honoured"),
        pytest.param(0.0, 1, None, id="zero-keeps-backoff"),
        pytest.param(1.0, 3, None, id="shorter-than-backoff-keeps-backoff"),
    ],
)
def test_retry_after_is_honoured_as_a_minimum_whatever_its_length(
    retry_after: float, attempt: int, expected_delay: float | None
) -> None:
    outcome = decide(transient(429, retry_after), attempt, 0.0, random.Random(SEED), POLICY)
    plain = backoff(attempt, random.Random(SEED), base=POLICY.base, cap=POLICY.cap)
    assert isinstance(outcome, RetryLater)
    assert outcome.delay == (expected_delay if expected_delay is not None else plain)
    assert outcome.delay >= retry_after


def test_same_seed_same_decision() -> None:
    """Decisions depend only on their inputs: a pinned seed pins the delay."""
    first = decide(transient(), 3, 0.0, random.Random(SEED), POLICY)
    second = decide(transient(), 3, 0.0, random.Random(SEED), POLICY)
    assert first == second
    assert isinstance(first, RetryLater)
    assert first.delay == pytest.approx(38.8258, abs=1e-3)  # uniform(5, 40), seed 1234


def test_jitter_spreads_delays_of_simultaneous_failures() -> None:
    rng = random.Random(SEED)
    delays = {round(backoff(4, rng, base=0.25, cap=30.0), 3) for _ in range(50)}
    assert len(delays) > 40


def test_custom_base_and_cap_are_respected() -> None:
    outcome = decide(transient(), 10, 0.0, random.Random(SEED), RetryPolicy(base=1, cap=2))
    assert isinstance(outcome, RetryLater)
    assert 1 <= outcome.delay <= 2


@pytest.mark.parametrize(
    ("error", "held"),
    [
        (TransientPassKitError("PassKit set_points answered 503", status=503), True),
        (TransientPassKitError("PassKit write_message timed out"), True),
        (TransientError("database: connection lost"), False),  # not PassKit's outage
    ],
)
def test_while_passkit_is_down_its_failures_wait_for_it_not_for_a_back_off(
    error: Exception, held: bool
) -> None:
    outcome = decide(error, 3, 120.0, random.Random(0), POLICY, passkit_down=True)
    assert isinstance(outcome, RetryLater)
    assert outcome.until_passkit_answers is held
    assert (outcome.delay == math.inf) is held


def test_a_failure_while_passkit_answers_keeps_its_own_back_off() -> None:
    error = TransientPassKitError("PassKit set_points answered 503", status=503)
    outcome = decide(error, 3, 120.0, random.Random(0), POLICY, passkit_down=False)
    assert isinstance(outcome, RetryLater) and not outcome.until_passkit_answers
    assert POLICY.base <= outcome.delay <= POLICY.cap


def test_work_past_its_maximum_age_fails_even_while_passkit_is_down() -> None:
    error = TransientPassKitError("PassKit set_points answered 503", status=503)
    outcome = decide(error, 3, POLICY.max_age, random.Random(0), POLICY, passkit_down=True)
    assert isinstance(outcome, Failed)
