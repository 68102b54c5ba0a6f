"""One PassKit rate limit shared by every daemon of an account, coordinated through Postgres.

`PASSKIT_RATE_LIMIT` is the account's limit. Each daemon publishes two numbers with its
heartbeat (loyaltyd.instances in docs/schema.sql): how much it `want`s, and the `share` it
claims. On every beat it reads the other live daemons' rows and works out its new share:

- the limit is split by demand, max-min fair: a daemon that had to wait for tokens wants the
  whole limit, an idle one little more than it used, and what one leaves the others split
  evenly (so a daemon alone gets the whole limit, and busy ones get equal shares);
- never more than what the others leave unclaimed (`rate - sum(their shares)`);
- a cut is used and published at once; a raise is used only from the next beat, once it
  has been published for the others to see. While a daemon's share is below its fair share
  it beats four times as often, so a joiner gets its share within about two heartbeats.

So the shares in use never add up to more than the limit while the daemons read each other's
rows, up to one case: two daemons raising into the same freed capacity in the same beat from
different views of who wants what; that overshoot is at most the freed capacity, for one
heartbeat. A daemon that cannot write its heartbeat keeps its share until its fence stops its
PassKit calls (before the others may count it dead and take its share); a dead daemon's share
is held for the others until its heartbeat is stale.

Each daemon paces its own requests at its share with a local burst in proportion to it (at
least one), and never hands out more tokens in any second than that allows, even after its
event loop stalled. So the fleet's busiest second is at most `rate + burst`, plus up to one
request per daemon where its share or its part of the burst rounds up.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple

from daemon.core.logs import get_logger
from daemon.domain.fleet import Offer, PeerRow
from daemon.passkit.throttle import TokenBucket

log = get_logger(__name__)

# An idle daemon keeps this fraction of the limit (at least 1/s), so the first requests of a
# quiet daemon go out without waiting a heartbeat for a share.
IDLE_FRACTION: Final = 0.02
# A daemon that did not have to wait asks for this much more than it used.
HEADROOM: Final = 1.5
# Rows a daemon holds claimed: this many seconds of its share (and at least MIN_CLAIMED), so
# that with several daemons the rows waiting for tokens are a few seconds of the account's
# limit in all, and a newly due program's rows are claimed within seconds.
CLAIM_AHEAD_SECONDS: Final = 2.0
MIN_CLAIMED: Final = 4


def account_key(api_key: str) -> str:
    """Which daemons share a budget: the same PassKit account. A hash, never the key."""
    if not api_key:
        return "mock"
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


class Peer(NamedTuple):
    """Another live daemon of the same account, as its heartbeat row shows it."""

    want: float
    share: float


def fair_shares(rate: float, wants: Sequence[float]) -> list[float]:
    """Split `rate` max-min fairly among `wants`, then spread what is left evenly.

    The same wants give the same split on every daemon."""
    if not wants:
        return []
    shares = [0.0] * len(wants)
    left = rate
    unmet = sorted(range(len(wants)), key=lambda i: wants[i])
    while unmet:
        level = left / len(unmet)
        i = unmet[0]
        if wants[i] > level:
            for j in unmet:
                shares[j] += level
            return shares
        shares[i] = wants[i]
        left -= wants[i]
        unmet.pop(0)
    extra = left / len(wants)
    return [s + extra for s in shares]


def next_share(rate: float, want: float, peers: Sequence[Peer]) -> tuple[float, float]:
    """This daemon's fair share, and that share within what the others leave unclaimed."""
    fair = fair_shares(rate, [want, *(p.want for p in peers)])[0]
    unclaimed = rate - sum(p.share for p in peers)
    return fair, max(0.0, min(fair, unclaimed))


class FleetBudget:
    """This daemon's share of the account's limit, applied to its token bucket."""

    def __init__(
        self,
        rate: float,
        burst: int,
        bucket: TokenBucket,
        *,
        account: str,
        clock: Callable[[], float],
    ) -> None:
        if rate <= 0:
            raise ValueError("a fleet budget needs a rate limit")
        self.rate = rate
        self.burst = burst
        self.account = account
        self._bucket = bucket
        self._clock = clock
        self._share = 0.0  # in use now
        self._claim = 0.0  # published in the last beat: the most the next beat may use
        self._proposed = 0.0  # worked out in the last beat, published by the next
        self._seen_at = clock()
        self._seen_granted = bucket.granted
        self._seen_waited = bucket.waited
        self.sent_per_second = 0.0
        self._want = 0.0
        self._mismatch_logged = False
        # True while this daemon's share is below its fair share (others still hold it, or
        # a raise waits to be published): its heartbeat then beats faster.
        self.settling = False
        bucket.adjust(0.0, 1)  # nothing before the first share

    @property
    def share(self) -> float:
        return self._share

    def claim_capacity(self) -> int:
        """How many rows this daemon's queue workers should hold claimed at its share."""
        return max(MIN_CLAIMED, math.ceil(CLAIM_AHEAD_SECONDS * self._share))

    def offer(self) -> Offer:
        """What this beat's heartbeat row says: the limit, the want, the share claimed, and
        what was sent since the last beat (measured here)."""
        want, claim = self._measure()
        return Offer(self.rate, want, claim, self.sent_per_second)

    def settle(self, peers: Sequence[PeerRow]) -> float | None:
        """Take this beat's view of the others; returns the share to publish at once when
        this beat cut it (the others may use the difference as soon as they see it)."""
        before = self._share
        share = self.apply(self._want, [(p.want, p.share) for p in peers])
        if abs(share - before) >= 0.05 * self.rate:
            log.info(
                "rate_budget_share",
                share=round(share, 1),
                rate_limit=self.rate,
                daemons=len(peers) + 1,
            )
        if any(p.rate_limit != self.rate for p in peers) and not self._mismatch_logged:
            log.warning(
                "rate_limit_mismatch",
                rate_limit=self.rate,
                others=sorted({p.rate_limit for p in peers}),
                detail="daemons on one PassKit account should share one PASSKIT_RATE_LIMIT",
            )
            self._mismatch_logged = True
        return self.cut()

    def _measure(self) -> tuple[float, float]:
        """(want, share claimed) for this beat's heartbeat row; measures the last beat."""
        now = self._clock()
        elapsed = max(now - self._seen_at, 1e-3)
        sent = self._bucket.granted - self._seen_granted
        short = self._bucket.waited > self._seen_waited or self._bucket.waiting > 0
        self._seen_at, self._seen_granted = now, self._bucket.granted
        self._seen_waited = self._bucket.waited
        self.sent_per_second = sent / elapsed
        idle = max(1.0, IDLE_FRACTION * self.rate)
        want = self.rate if short else min(self.rate, max(idle, HEADROOM * self.sent_per_second))
        self._claim = self._proposed
        self._want = want
        return want, self._claim

    def apply(self, want: float, rows: Sequence[tuple[float, float]]) -> float:
        """Take this beat's view of the others, (want, share) each; returns the share now in
        use."""
        peers = [Peer(*row) for row in rows]
        fair, self._proposed = next_share(self.rate, want, peers)
        self._set(min(self._proposed, self._claim))
        self.settling = self._share < min(fair, self._proposed) or self._proposed < fair - 1e-6
        return self._share

    def cut(self) -> float | None:
        """The share to publish at once because this beat cut it (the others may use the
        difference as soon as they see it), or None."""
        return self._share if self._share < self._claim - 1e-9 else None

    def published(self, claim: float) -> None:
        self._claim = claim

    def stop(self) -> None:
        """No share at all (this daemon is leaving or cut off)."""
        self._proposed = self._claim = 0.0
        self._set(0.0)

    def _set(self, share: float) -> None:
        if math.isclose(share, self._share, rel_tol=1e-6, abs_tol=1e-9):
            return
        self._share = share
        local_burst = max(1, math.floor(self.burst * share / self.rate))
        self._bucket.adjust(share, local_burst)
