"""What a daemon's heartbeat row says of its share of the account's rate limit, and what it
reads of the others': the one narrow interface between the heartbeat (daemon.store.instances)
and the fleet budget (daemon.passkit.budget)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Offer:
    """This daemon's budget, as its heartbeat row publishes it."""

    rate_limit: float  # its PASSKIT_RATE_LIMIT (the account's)
    want: float  # requests/s it would use
    claim: float  # the share it claims: the most it may use until the next beat
    sent_per_second: float  # what it sent since the last beat


@dataclass(frozen=True, slots=True)
class PeerRow:
    """Another live daemon of the same account, as its heartbeat row shows it."""

    want: float
    share: float
    rate_limit: float
