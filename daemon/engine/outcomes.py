"""What one unit of work came to: the engine's one vocabulary, written back by every store.

Pure: no asyncpg, aiohttp or apscheduler here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal


@dataclass(frozen=True, slots=True)
class Succeeded:
    """The work reached PassKit (or mock mode counted it); `sent` is what the recipient got,
    when the store keeps it."""

    sent: str | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    """Deliberately not sent (no PassKit id, frequency cap, opted out since, …)."""

    reason: str


@dataclass(frozen=True, slots=True)
class RetryLater:
    """A transient failure: due again `delay` seconds after the outcome is recorded; an
    infinite delay waits until PassKit answers again (the stores write 'infinity', and the
    daemon that sees PassKit back makes every such row due at once)."""

    delay: float
    error: str

    @property
    def until_passkit_answers(self) -> bool:
        return self.delay == float("inf")


@dataclass(frozen=True, slots=True)
class Failed:
    """A permanent failure (or transient ones past the maximum age): recorded once, never
    retried by itself."""

    error: str


Outcome = Succeeded | Skipped | RetryLater | Failed
Code = Literal["sent", "skipped", "retry", "failed"]

_CODES: Final[dict[type, Code]] = {
    Succeeded: "sent",
    Skipped: "skipped",
    RetryLater: "retry",
    Failed: "failed",
}


def code(outcome: Outcome) -> Code:
    """The outcome as stores write it and as metrics label it."""
    return _CODES[type(outcome)]


def error_of(outcome: Outcome) -> str | None:
    """The text stored beside the outcome: the error, or why it was skipped."""
    if isinstance(outcome, RetryLater | Failed):
        return outcome.error
    if isinstance(outcome, Skipped):
        return outcome.reason
    return None


def retry_in(outcome: Outcome) -> float | None:
    return outcome.delay if isinstance(outcome, RetryLater) else None
