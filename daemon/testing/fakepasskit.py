"""A fake PassKit REST server for tests, benchmarks and the demo.

It speaks the routes loyaltyd uses with PassKit's request shapes (passkit-api.md), checks the
JWT the way PassKit does (HS256 with the secret, `uid` = the API key, not expired; with or
without a `Bearer ` prefix) and keeps per-pass state: points, metaData, redeemed, validations.

Knobs are plain attributes, changeable while it runs: `latency`, `faults`, `strict`, plus
`force_status()` for one pass and `fail_next()` for a scripted sequence. Every request is
recorded in memory (`requests`, `count()`); recording is an append and a counter bump, so
a benchmark can push 100k+ requests through it.

State changes apply when a request arrives, before the simulated latency, as on a server
that answers slowly; an injected fault (503, 429, 500, timeout) changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import jwt
from aiohttp import web

from daemon.passkit import routes

ROUTE_SET_POINTS: Final = routes.SET_POINTS.route
ROUTE_UPDATE_MEMBER: Final = routes.UPDATE_MEMBER.route
ROUTE_GET_MEMBER: Final = routes.GET_MEMBER.route
ROUTE_UPDATE_COUPON: Final = routes.UPDATE_COUPON.route
ROUTE_REDEEM_COUPON: Final = routes.REDEEM_COUPON.route
ROUTE_GET_COUPON: Final = routes.GET_COUPON.route
ROUTE_UPDATE_TICKET: Final = routes.UPDATE_TICKET.route
ROUTE_VALIDATE_TICKET: Final = routes.VALIDATE_TICKET.route
ROUTE_GET_TICKET: Final = routes.GET_TICKET.route

# p99 of a standard normal: turns "median and p99" into a lognormal's sigma.
_Z99 = 2.3263478740408408
# Status recorded for a request the fake never answered (an injected timeout).
NO_ANSWER: Final = 0

Timeout = Literal["timeout"]
Outcome = int | Timeout
JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """Lognormal answer delay: `median_ms` with a tail reaching `p99_ms` (seedable via the
    fake's `seed`). p99_ms <= median_ms means a constant delay; median 0 means instant."""

    median_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 30_000.0

    @property
    def sigma(self) -> float:
        if self.median_ms <= 0 or self.p99_ms <= self.median_ms:
            return 0.0
        return math.log(self.p99_ms / self.median_ms) / _Z99

    @property
    def mean_ms(self) -> float:
        return min(self.median_ms * math.exp(self.sigma**2 / 2), self.max_ms)

    def sample(self, rng: random.Random) -> float:
        """One delay, in seconds."""
        if self.median_ms <= 0:
            return 0.0
        sigma = self.sigma
        ms = rng.lognormvariate(math.log(self.median_ms), sigma) if sigma else self.median_ms
        return min(ms, self.max_ms) / 1000.0


@dataclass(slots=True)
class Faults:
    """Probabilities (0..1) of injected failures per request; mutable while running."""

    p503: float = 0.0
    p429: float = 0.0
    p500: float = 0.0
    p_timeout: float = 0.0
    retry_after: str | None = "1"  # the Retry-After header sent with a 429

    @property
    def any(self) -> bool:
        return (self.p503 + self.p429 + self.p500 + self.p_timeout) > 0

    def draw(self, rng: random.Random) -> Outcome | None:
        roll = rng.random()
        candidates: tuple[tuple[Outcome, float], ...] = (
            ("timeout", self.p_timeout),
            (503, self.p503),
            (429, self.p429),
            (500, self.p500),
        )
        for outcome, probability in candidates:
            if roll < probability:
                return outcome
            roll -= probability
        return None


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    route: str
    pass_id: str | None
    body: Any
    at: float  # event-loop time of arrival
    status: int  # NO_ANSWER for an injected timeout
    latency: float  # seconds the fake waited before answering


@dataclass(slots=True)
class PassState:
    points: float = 0
    metadata: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    redeemed: bool = False
    validations: int = 0


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    payload: JsonObject
    headers: dict[str, str] | None = None


class _Reject(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.answer = _Answer(status, {"error": message}, headers)


_FAULT_ANSWERS: Final[dict[int, str]] = {
    503: "Server is unavailable. Back off for 250ms and repeat request until successful.",
    429: "rate limit exceeded",
    500: "unexpected error",
}
_NOT_AUTHORIZED = _Answer(401, {"error": "unauthorized"})


class FakePassKit:
    """`async with FakePassKit(key, secret) as fake:` or `start()`/`stop()`; `fake.url`."""

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        latency: LatencyModel | None = None,
        faults: Faults | None = None,
        seed: int = 0,
        strict: bool = False,
        message_field: str = "loyaltydMessage",
        merge_metadata: bool = True,
        record_bodies: bool = True,
        hang_seconds: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.latency = latency or LatencyModel()
        self.faults = faults or Faults()
        self.strict = strict
        self.message_field = message_field
        # Whether PassKit merges a partial metaData map is unverified: both are simulated.
        self.merge_metadata = merge_metadata
        self.record_bodies = record_bodies
        self.hang_seconds = hang_seconds
        self.requests: list[RecordedRequest] = []
        self.tokens_seen: set[str] = set()
        self._key = api_key
        self._secret = api_secret
        self._wall_clock = wall_clock
        self._rng = random.Random(seed)
        self._passes: dict[str, PassState] = {}
        self._forced: dict[str, _Answer] = {}
        self._script: deque[Outcome] = deque()
        self._counts: Counter[str] = Counter()
        self._verified: dict[str, int] = {}  # token -> exp, so each token is decoded once
        self._latency_sum = 0.0
        self._answered = 0
        self._stopping = asyncio.Event()
        self._runner: web.ServerRunner | None = None
        self.url = ""
        self._handlers: dict[str, Callable[[str | None, Any], _Answer]] = {
            ROUTE_SET_POINTS: self._set_points,
            ROUTE_UPDATE_MEMBER: self._update_metadata,
            ROUTE_UPDATE_COUPON: self._update_metadata,
            ROUTE_UPDATE_TICKET: self._update_metadata,
            ROUTE_REDEEM_COUPON: self._redeem_coupon,
            ROUTE_VALIDATE_TICKET: self._validate_ticket,
            ROUTE_GET_MEMBER: self._get_pass,
            ROUTE_GET_COUPON: self._get_pass,
            ROUTE_GET_TICKET: self._get_pass,
        }

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on `host:port` (0 = any free port); return the base URL."""
        self._stopping = asyncio.Event()
        # Cancelling a handler whose client went away ends injected hangs with the client.
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakePassKit:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- knobs ---------------------------------------------------------------------------------

    def force_status(
        self,
        pass_id: str,
        status: int,
        message: str = "forced",
        *,
        retry_after: str | None = None,
    ) -> None:
        """Answer every request about `pass_id` with `status` (and a Retry-After header, if
        given) until `clear_forced()`."""
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        self._forced[pass_id] = _Answer(status, {"error": message}, headers)

    def clear_forced(self, pass_id: str | None = None) -> None:
        if pass_id is None:
            self._forced.clear()
        else:
            self._forced.pop(pass_id, None)

    def fail_next(self, *outcomes: Outcome) -> None:
        """Answer the next requests (any route) with these statuses or "timeout", in order."""
        self._script.extend(outcomes)

    def add_pass(
        self, pass_id: str, *, points: float = 0, metadata: dict[str, str] | None = None
    ) -> None:
        self._passes[pass_id] = PassState(points=points, metadata=dict(metadata or {}))

    def reset_requests(self) -> None:
        self.requests.clear()
        self._counts.clear()
        self._latency_sum, self._answered = 0.0, 0

    # --- accessors -----------------------------------------------------------------------------

    def count(self, route: str | None = None) -> int:
        return self._counts.total() if route is None else self._counts[route]

    def messages_for(self, pass_id: str) -> list[str]:
        """Every value written to the message field of `pass_id`, oldest first."""
        state = self._passes.get(pass_id)
        return list(state.messages) if state else []

    def points_of(self, pass_id: str) -> float | None:
        state = self._passes.get(pass_id)
        return state.points if state else None

    def metadata_of(self, pass_id: str) -> dict[str, str]:
        state = self._passes.get(pass_id)
        return dict(state.metadata) if state else {}

    def redeemed(self, pass_id: str) -> bool:
        state = self._passes.get(pass_id)
        return bool(state and state.redeemed)

    def validations_of(self, pass_id: str) -> int:
        state = self._passes.get(pass_id)
        return state.validations if state else 0

    def mean_latency(self) -> float:
        """Mean seconds the fake waited before answering, over answered requests."""
        return self._latency_sum / self._answered if self._answered else 0.0

    # --- request path --------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        route, path_id = _route_of(request.method, request.path)
        if route is None:
            return _response(_Answer(404, {"error": f"no route {request.method} {request.path}"}))
        body = await _read_body(request)
        authorization = request.headers.get("Authorization")
        pass_id = _pass_id_of(path_id, body)
        outcome = self._next_fault()
        if outcome == "timeout":
            self._record(route, pass_id, body, NO_ANSWER, 0.0)
            return await self._hang()
        answer = self._answer(route, path_id, body, outcome, authorization)
        delay = self.latency.sample(self._rng)
        self._record(route, pass_id, body, answer.status, delay)
        if delay:
            await asyncio.sleep(delay)
        return _response(answer)

    def _answer(
        self,
        route: str,
        path_id: str | None,
        body: Any,
        fault: Outcome | None,
        authorization: str | None,
    ) -> _Answer:
        if isinstance(fault, int):
            return self._fault_answer(fault)
        if not self._authorized(authorization):
            return _NOT_AUTHORIZED
        try:
            return self._handlers[route](path_id, body)
        except _Reject as reject:
            return reject.answer

    def _fault_answer(self, status: int) -> _Answer:
        headers = None
        if status == 429 and self.faults.retry_after is not None:
            headers = {"Retry-After": self.faults.retry_after}
        message = _FAULT_ANSWERS.get(status, f"injected {status}")
        return _Answer(status, {"error": message}, headers)

    def _next_fault(self) -> Outcome | None:
        if self._script:
            return self._script.popleft()
        return self.faults.draw(self._rng) if self.faults.any else None

    async def _hang(self) -> web.StreamResponse:
        # Longer than any sane client timeout; ends early when the fake stops.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.hang_seconds)
        return _response(_Answer(504, {"error": "gateway timeout"}))

    def _record(
        self, route: str, pass_id: str | None, body: Any, status: int, latency: float
    ) -> None:
        loop_time = asyncio.get_running_loop().time()
        kept = body if self.record_bodies else None
        self.requests.append(RecordedRequest(route, pass_id, kept, loop_time, status, latency))
        self._counts[route] += 1
        if status != NO_ANSWER:
            self._latency_sum += latency
            self._answered += 1

    # --- auth ----------------------------------------------------------------------------------

    def _authorized(self, header: str | None) -> bool:
        if not header:
            return False
        token = header.removeprefix("Bearer ")
        self.tokens_seen.add(token)
        exp = self._verified.get(token)
        if exp is None:
            exp = self._verify(token)
            if exp is None:
                return False
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[token] = exp
        return self._wall_clock() < exp

    def _verify(self, token: str) -> int | None:
        """The token's `exp` if PassKit would accept it (expiry is checked by the caller,
        against the injectable wall clock)."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                options={
                    "require": ["uid", "iat", "exp"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidTokenError:
            return None
        if claims.get("uid") != self._key or not isinstance(claims.get("exp"), int):
            return None
        exp: int = claims["exp"]
        return exp

    # --- PassKit behaviour ---------------------------------------------------------------------

    def _pass(self, pass_id: str) -> PassState:
        forced = self._forced.get(pass_id)
        if forced is not None:
            raise _Reject(forced.status, forced.payload["error"], forced.headers)
        state = self._passes.get(pass_id)
        if state is None:
            if self.strict:
                raise _Reject(404, f"pass {pass_id} not found")
            state = self._passes[pass_id] = PassState()
        return state

    def _set_points(self, _path_id: str | None, body: Any) -> _Answer:
        pass_id = _required_id(body)
        state = self._pass(pass_id)
        points = body.get("points")
        if body.get("resetPoints") is True:
            state.points = 0
        elif isinstance(points, int | float) and not isinstance(points, bool) and points > 0:
            state.points = points
        else:
            # proto3 drops a zero, so PassKit sees no points at all.
            raise _Reject(400, "points, secondaryPoints or tierPoints must be provided")
        return _Answer(200, {"id": pass_id, "points": state.points})

    def _update_metadata(self, _path_id: str | None, body: Any) -> _Answer:
        pass_id = _required_id(body)
        metadata = body.get("metaData", {})
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise _Reject(400, "metaData must map strings to strings")
        state = self._pass(pass_id)
        if self.merge_metadata:
            state.metadata.update(metadata)
        else:
            state.metadata = dict(metadata)
        if self.message_field in metadata:
            state.messages.append(metadata[self.message_field])
        return _Answer(200, {"id": pass_id})

    def _redeem_coupon(self, _path_id: str | None, body: Any) -> _Answer:
        pass_id = _required_id(body)
        state = self._pass(pass_id)
        if state.redeemed:
            # grpc-gateway turns FAILED_PRECONDITION into a 400 (passkit-api.md §5).
            raise _Reject(400, "coupon has already been redeemed")
        state.redeemed = True
        return _Answer(200, {"id": pass_id})

    def _validate_ticket(self, _path_id: str | None, body: Any) -> _Answer:
        ticket = body.get("ticket") if isinstance(body, dict) else None
        pass_id = ticket.get("ticketId") if isinstance(ticket, dict) else None
        if not isinstance(pass_id, str) or not pass_id:
            raise _Reject(400, "ticket.ticketId or ticket.ticketNumber required")
        state = self._pass(pass_id)
        if state.redeemed:
            raise _Reject(400, "ticket has already been redeemed")
        state.validations += 1
        limit = body.get("maxNumberOfValidations") or 0
        if isinstance(limit, int) and limit and state.validations >= limit:
            state.redeemed = True
        status = "REDEEMED" if state.redeemed else "ISSUED"
        return _Answer(200, {"valid": True, "ticket": {"id": pass_id, "status": status}})

    def _get_pass(self, path_id: str | None, _body: Any) -> _Answer:
        if not path_id:
            raise _Reject(400, "id required")
        state = self._pass(path_id)
        return _Answer(200, {"id": path_id, "points": state.points, "metaData": state.metadata})


# --- plumbing ----------------------------------------------------------------------------------


def _route_of(method: str, path: str) -> tuple[str | None, str | None]:
    found = routes.endpoint_of(method, path)
    if found is None:
        return None, None
    endpoint, path_id = found
    return endpoint.route, path_id or None


# Handlers answer 400 to anything that is not a JSON object, this included.
_INVALID_JSON: Final = object()


async def _read_body(request: web.BaseRequest) -> Any:
    if not request.body_exists:
        return None
    try:
        return json.loads(await request.read())
    except ValueError:
        return _INVALID_JSON


def _pass_id_of(path_id: str | None, body: Any) -> str | None:
    if path_id is not None:
        return path_id
    if not isinstance(body, dict):
        return None
    ticket = body.get("ticket")
    if isinstance(ticket, dict):
        return ticket.get("ticketId")
    pass_id = body.get("id")
    return pass_id if isinstance(pass_id, str) else None


def _required_id(body: Any) -> str:
    """PassKit wants the pass id in the body (never in the path) for updates."""
    pass_id = body.get("id") if isinstance(body, dict) else None
    if not isinstance(pass_id, str) or not pass_id:
        raise _Reject(400, "id (or externalId and programId) required in the body")
    return pass_id


def _response(answer: _Answer) -> web.Response:
    return web.Response(
        status=answer.status,
        body=json.dumps(answer.payload).encode(),
        content_type="application/json",
        headers=answer.headers,
    )
