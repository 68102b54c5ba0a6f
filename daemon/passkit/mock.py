"""Mock mode's PassKit: a transport that answers in-process, as PassKit would.

With no PassKit credentials nothing leaves the machine, yet everything else is as in
production: each request is built, size-checked, signed off by the throttle and the fleet
budget, read before it is written (read_modify_write), and answered after
PASSKIT_MOCK_LATENCY_MS, so a campaign's progress, its cancel and the rate limit can be
rehearsed. Answers follow the shapes the client reads (member.pb.go MemberPoints,
message.pb.go SendMessageResponse, io.Count …); a pass's metaData is remembered so a message
written twice reads back what was written.

Logs: one INFO `passkit_mock_traffic` a second while there is traffic (requests by
operation), and one DEBUG `passkit_mock_request` per request with what it would have sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

from daemon.core.logs import get_logger
from daemon.passkit import routes
from daemon.passkit.suffix import visible_text
from daemon.passkit.transport import Reply, Request, Streamed

log = get_logger(__name__)

# Passes whose metaData is remembered (least recently written forgotten first): a read of a
# forgotten one answers none, which costs nothing (each write carries a fresh nonce), and the
# daemon stays small through a mock blast of millions (about 0.7 kB a pass).
REMEMBERED_PASSES: Final = 10_000
# What a DEBUG line shows of a message text.
TEXT_SHOWN: Final = 80
REPORT_SECONDS: Final = 1.0

_WRITES: Final = frozenset({routes.UPDATE_MEMBER, routes.UPDATE_COUPON, routes.UPDATE_TICKET})
_READS: Final = frozenset(routes.READ_PASS.values())
_COUNTS: Final = frozenset({routes.COUNT_MEMBERS, routes.COUNT_COUPONS, routes.COUNT_TICKETS})
_IDENTIFIED: Final = frozenset(
    {routes.GET_PROGRAM, routes.GET_TIER, routes.GET_TEMPLATE, routes.GET_MESSAGE}
)


class MockPassKit:
    """The transport of mock mode (see the module docstring)."""

    def __init__(
        self,
        latency_seconds: float,
        *,
        message_field: str,
        sleep: Callable[[float], Any] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._latency = latency_seconds
        self._message_field = message_field
        self._sleep = sleep
        self._clock = clock
        self._metadata: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._created = 0
        self._traffic: Counter[str] = Counter()
        self._reporter: asyncio.Task[None] | None = None
        self.requests = 0  # answered, ever

    async def send(self, request: Request) -> Reply:
        self._start_reporting()
        body = _decoded(request.body)
        self._note(request, body)
        if self._latency > 0:
            await self._sleep(self._latency)
        answer = self._answer(request, body)
        self.requests += 1
        self._traffic[request.operation] += 1
        return Reply(200, json.dumps(answer).encode())

    @asynccontextmanager
    async def stream(self, request: Request, *, idle_seconds: float) -> AsyncIterator[Streamed]:
        """A list of what PassKit holds in mock mode: nothing."""
        reply = await self.send(request)
        yield _EmptyStream(reply.status)

    async def close(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            self._reporter = None
        self._report()

    # --- answers -------------------------------------------------------------------------------

    def _answer(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        endpoint = request.endpoint
        if endpoint == routes.SET_POINTS:
            return {
                "id": body.get("id"),
                "points": body.get("points", 0),
                "tierPoints": body.get("tierPoints", 0),
            }
        if endpoint in _WRITES:
            return self._write(body)
        if endpoint in _READS:
            passkit_id = request.params[0]
            return {"id": passkit_id, "metaData": dict(self._metadata.get(passkit_id, {}))}
        if endpoint == routes.VALIDATE_TICKET:
            return {"valid": True, "ticket": {"id": _ticket_id(body), "status": "REDEEMED"}}
        if endpoint in (routes.CREATE_MESSAGE, routes.CREATE_SINK):
            self._created += 1
            return {"id": f"mock-{endpoint.operation}-{self._created}"}
        if endpoint == routes.SEND_MESSAGE:
            ids = body.get("passIds", {}).get("ids", [])
            return {"count": len(ids)} if isinstance(ids, list) else {}
        if endpoint in _COUNTS:
            return {}  # io.Count: a total of 0 is left out
        if endpoint in _IDENTIFIED:
            return {"id": request.params[-1]}
        return {}

    def _write(self, body: dict[str, Any]) -> dict[str, Any]:
        passkit_id = str(body.get("id", ""))
        metadata = body.get("metaData")
        if isinstance(metadata, dict):
            self._metadata[passkit_id] = metadata
            self._metadata.move_to_end(passkit_id)
            while len(self._metadata) > REMEMBERED_PASSES:
                self._metadata.popitem(last=False)
        return {"id": passkit_id}

    # --- logs ----------------------------------------------------------------------------------

    def _note(self, request: Request, body: dict[str, Any]) -> None:
        """What would have been sent, at DEBUG: the pass, the points, the text (cut)."""
        fields: dict[str, Any] = {"operation": request.operation}
        passkit_id = body.get("id") or _ticket_id(body) or "/".join(request.params)
        if passkit_id:
            fields["passkit_id"] = passkit_id
        if "points" in body or body.get("resetPoints"):
            fields["points"] = body.get("points", 0)
        if "tierPoints" in body:
            fields["tier_points"] = body["tierPoints"]
        text = _text_of(body, self._message_field)
        if text is not None:
            fields["text"] = _cut(text)
        log.debug("passkit_mock_request", **fields)

    def _start_reporting(self) -> None:
        if self._reporter is None or self._reporter.done():
            self._reporter = asyncio.get_running_loop().create_task(
                self._report_every_second(), name="passkit-mock-traffic"
            )

    async def _report_every_second(self) -> None:
        while True:
            await asyncio.sleep(REPORT_SECONDS)
            self._report()

    def _report(self) -> None:
        if not self._traffic:
            return
        requests = dict(sorted(self._traffic.items()))
        self._traffic.clear()
        log.info("passkit_mock_traffic", requests=requests, total=sum(requests.values()))


class _EmptyStream:
    def __init__(self, status: int) -> None:
        self._status = status

    @property
    def status(self) -> int:
        return self._status

    async def read(self) -> bytes:
        return b""

    async def lines(self) -> AsyncIterator[bytes]:
        return
        yield b""


def _decoded(body: bytes | None) -> dict[str, Any]:
    if not body:
        return {}
    value = json.loads(body)
    return value if isinstance(value, dict) else {}


def _ticket_id(body: dict[str, Any]) -> str | None:
    ticket = body.get("ticket")
    if isinstance(ticket, dict):
        value = ticket.get("ticketId") or ticket.get("id")
        return str(value) if value else None
    return None


def _text_of(body: dict[str, Any], field: str) -> str | None:
    """The message text of a write (without its invisible suffix) or of a Messages API
    message."""
    metadata = body.get("metaData")
    if isinstance(metadata, dict) and isinstance(metadata.get(field), str):
        return visible_text(metadata[field])
    text = body.get("plainTextContent")
    return text if isinstance(text, str) else None


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_SHOWN else text[: TEXT_SHOWN - 1] + "…"
