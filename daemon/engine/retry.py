"""The one retry decision: what becomes of a unit of work whose handler failed.

Transient failures (`TransientError`: PassKit's 5xx, 429, timeouts, connection errors; a
database connection lost mid-work) come back later, after jittered
exponential back-off capped at `cap` seconds, or after PassKit's `Retry-After` if that is
longer, whatever its length; the worker's slot is free meanwhile. They go on until the work
has been owed for `max_age` seconds. Only a permanent answer, or that age, ends the work as
failed.

No I/O and no clock of its own: the job's age and `rng` come from the caller, so the tests pin
them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from daemon.core.errors import TransientError, TransientPassKitError
from daemon.engine.outcomes import Failed, RetryLater

# 2**32 × base is already years; beyond it the float maths would only overflow.
_MAX_EXPONENT = 32


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """LOYALTYD_RETRY_BASE_SECONDS, LOYALTYD_RETRY_CAP_SECONDS, LOYALTYD_RETRY_MAX_AGE_SECONDS."""

    base: float = 5.0
    cap: float = 600.0
    max_age: float = 86_400.0


def backoff(attempt: int, rng: random.Random, *, base: float, cap: float) -> float:
    """Jittered exponential delay after the `attempt`-th failure (1-based).

    Full jitter spreads retries of many callers hit by the same outage; its floor is `base`
    rather than zero, so no retry comes sooner than that.
    """
    ceiling = min(cap, base * 2 ** min(max(attempt, 1), _MAX_EXPONENT))
    floor = min(base, ceiling)
    return rng.uniform(floor, ceiling)


def decide(
    error: Exception,
    attempts: int,
    owed_seconds: float,
    rng: random.Random,
    policy: RetryPolicy,
    *,
    passkit_down: bool = False,
) -> RetryLater | Failed:
    """After the `attempts`-th try (1-based) of work owed for `owed_seconds` failed.

    While PassKit is down as a whole (`passkit_down`: the daemon's health signal, not this
    one request), a transient PassKit failure spends no back-off: the work waits until PassKit
    answers again (`RetryLater` with an infinite delay; the daemon's probe then makes it due
    at once). A failure of one pass while PassKit answers keeps its own back-off, and so does
    a failure that says when to come back (Retry-After)."""
    if not isinstance(error, TransientError):
        return Failed(str(error))
    if owed_seconds >= policy.max_age:
        return Failed(f"gave up after {attempts} attempts over {_duration(owed_seconds)}: {error}")
    if passkit_down and isinstance(error, TransientPassKitError) and error.retry_after is None:
        return RetryLater(math.inf, f"waiting for PassKit to answer again: {error}")
    delay = backoff(attempts, rng, base=policy.base, cap=policy.cap)
    if error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return RetryLater(delay, str(error))


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
