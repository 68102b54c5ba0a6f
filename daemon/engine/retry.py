"""Retry or give up: pure decisions about a failed PassKit call, and about a unit of work
whose call kept failing.

No I/O and no clock of its own: `now` and `rng` come from the caller, so the tests pin them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from daemon.core.errors import PassKitError, TransientPassKitError
from daemon.engine.outcomes import Failed, RetryLater

# PassKit documents "503: back off for 250 ms and repeat"; it is the first step of the ladder.
DEFAULT_BASE_SECONDS = 0.25
DEFAULT_CAP_SECONDS = 30.0
# 2**32 × base is already years; beyond it the float maths would only overflow.
_MAX_EXPONENT = 32

GiveUpReason = Literal["permanent", "attempts_exhausted", "retry_after_beyond_cap"]


@dataclass(frozen=True, slots=True)
class RetryAt:
    """Try again at `at` (on the caller's clock), `delay` seconds after `now`."""

    at: float
    delay: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: GiveUpReason


def backoff(attempt: int, rng: random.Random, *, base: float, cap: float) -> float:
    """Jittered exponential delay after the `attempt`-th failure (1-based).

    Full jitter spreads retries of many callers hit by the same outage; its floor is `base`
    rather than zero because PassKit asks for at least 250 ms before a repeat.
    """
    ceiling = min(cap, base * 2 ** min(max(attempt, 1), _MAX_EXPONENT))
    floor = min(base, ceiling)
    return rng.uniform(floor, ceiling)


def decide(
    error: PassKitError,
    attempt: int,
    now: float,
    rng: random.Random,
    *,
    max_attempts: int,
    base: float = DEFAULT_BASE_SECONDS,
    cap: float = DEFAULT_CAP_SECONDS,
) -> RetryAt | GiveUp:
    """What to do after the `attempt`-th try (1-based) of one request failed with `error`."""
    if not isinstance(error, TransientPassKitError):
        return GiveUp("permanent")
    if attempt >= max_attempts:
        return GiveUp("attempts_exhausted")
    delay = backoff(attempt, rng, base=base, cap=cap)
    if error.retry_after is not None:
        # A server asking for more than `cap` gets its wish by the caller rescheduling the work
        # (the error carries `retry_after`), not by a worker sleeping on a lease.
        if error.retry_after > cap:
            return GiveUp("retry_after_beyond_cap")
        delay = max(delay, error.retry_after)
    return RetryAt(at=now + delay, delay=delay)


# --- queue level ---------------------------------------------------------------------------------

# When a unit of work (a pass sync, a campaign delivery) outlives the client's own quick
# retries, PassKit may be down for minutes: the queue waits longer before the next try.
REQUEUE_BASE_SECONDS = 5.0


def requeue(
    error: str,
    attempts: int,
    now: datetime,
    rng: random.Random,
    *,
    max_attempts: int,
    cap: float,
    base: float = REQUEUE_BASE_SECONDS,
) -> RetryLater | Failed:
    """After a transient failure on the `attempts`-th try: due again later, or given up."""
    if attempts >= max_attempts:
        return Failed(f"gave up after {attempts} attempts: {error}")
    delay = backoff(attempts, rng, base=base, cap=cap)
    return RetryLater(now + timedelta(seconds=delay), error)
