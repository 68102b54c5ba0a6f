"""Work waiting to be tried again, said the way a person reads it: "4 waiting to retry after
PassKit 503, next in 3 s". Pure."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

_STATUS: Final = re.compile(r"\banswered (\d{3})\b")


def retry_cause(error: str | None) -> str:
    """What the last failed attempt met, from the error stored beside the row."""
    if not error:
        return "a failed attempt"
    status = _STATUS.search(error)
    if status is not None:
        return f"PassKit {status.group(1)}"
    if "timed out" in error:
        return "a PassKit timeout"
    if "held until PassKit answers" in error or "down" in error:
        return "PassKit being down"
    if "failed:" in error:
        return "a connection failure"
    return "a failed attempt"


@dataclass(frozen=True, slots=True)
class RetryWait:
    """Rows of one campaign (or queue) waiting for another try after a transient failure."""

    waiting: int
    held: int  # of those, waiting for PassKit to answer at all (held while it was down)
    next_in: float  # seconds until the soonest of the others is due again (0: due now)
    latest_error: str | None

    def describe(self) -> str:
        """`4 waiting to retry after PassKit 503, next in 3 s`."""
        cause = (
            "PassKit being down" if self.held == self.waiting else retry_cause(self.latest_error)
        )
        text = f"{self.waiting:,} waiting to retry after {cause}"
        if self.held == self.waiting:
            return text + ", until it answers again"
        if self.next_in >= 1:
            return text + f", next in {math.ceil(self.next_in):.0f} s"
        return text + ", retrying now"
