"""What the reads loyaltyd already makes say of a coupon's or a ticket's wallet state.

A program whose row names no PassKit coupon campaign or production is not swept for its
coupons and tickets; their install state comes from webhooks and from these reads: the read
before a message in `read_modify_write` mode, and the read-back of a refused redemption or
validation. The client hands each record it read to `SeenReads.note` (synchronous, never
failing, never blocking a send); a background task applies what was noted about once a second,
the newest record per pass, as a webhook's re-read would (`store.wallet.apply_read`). Members
are left to their program's sweep, which reads them all anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from typing import Any, Final

from daemon.core.errors import MalformedRecord, TransientError
from daemon.core.logs import get_logger
from daemon.domain.wallet import WalletRecord
from daemon.passkit.records import wallet_record
from daemon.store.pool import Pool
from daemon.store.wallet import apply_read

log = get_logger(__name__)

NOTED: Final = frozenset({"COUPON", "EVENT_TICKET"})
MAX_WAITING: Final = 10_000  # passes noted and not yet applied; the oldest give way
EVERY_SECONDS: Final = 1.0


class SeenReads:
    def __init__(self, pool: Pool, *, every: float = EVERY_SECONDS) -> None:
        self._pool = pool
        self._every = every
        self._waiting: OrderedDict[tuple[str, str], WalletRecord] = OrderedDict()
        self.applied = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def note(self, protocol: str, held: Any) -> None:
        """A record PassKit answered for a pass of `protocol`; kept for the next round."""
        if protocol not in NOTED:
            return
        try:
            record = wallet_record(held)
        except MalformedRecord as exc:
            log.debug("wallet_read_unreadable", protocol=protocol, reason=str(exc))
            return
        key = (protocol, record.passkit_id)
        self._waiting[key] = record
        self._waiting.move_to_end(key)
        while len(self._waiting) > MAX_WAITING:
            self._waiting.popitem(last=False)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self._every)
            await self.apply()

    async def apply(self) -> int:
        """Apply what was noted; a database failure keeps the rest for the next round."""
        moved = 0
        while self._waiting:
            key, record = self._waiting.popitem(last=False)
            try:
                rows = await apply_read(self._pool, key[0], record)
            except TransientError as exc:
                if key not in self._waiting:  # nothing newer was noted meanwhile
                    self._waiting[key] = record
                    self._waiting.move_to_end(key, last=False)
                log.warning("wallet_reads_not_applied", waiting=len(self._waiting), error=str(exc))
                break
            self.applied += 1
            moved += sum(1 for r in rows if r.moved)
        if moved:
            log.info("wallet_reads_applied", moved=moved)
        return moved
