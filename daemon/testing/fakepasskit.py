"""A fake PassKit REST server for tests, benchmarks and the demo, written from PassKit's
published definitions (PassKit/passkit-golang-grpc-sdk v1.1.123; passkit-api.md beside the
spec), so a client that strays from them fails here first.

Two parts:
- the model (`fakepasskit_model.PassKitModel`): PassKit's state and what each operation does
  to it, plain synchronous Python, drivable by a test without HTTP. Its docstring says how it
  reads requests, addresses passes, answers, lists and counts, and which webhooks fall due;
  `fakepasskit_records`, `fakepasskit_filters` and `fakepasskit_protos` hold what it is made of.
- the HTTP shell, `FakePassKit` below: it routes by the table shared with the client
  (`daemon.passkit.routes`), checks the token, injects faults and latency, writes lists as
  grpc-gateway streams, sends the webhooks the model says are due, and hands every request to
  its `model`. The model's knobs and reads are the fake's too (`fake.add_pass`,
  `fake.points_of`, `fake.requests`, `fake.merge_metadata`, …), so callers need not say
  `fake.model`.

The shell's own behaviour:
- Auth: the JWT as PassKit documents it (HS256 with the secret, `uid` = the API key, `iat` not
  in the future, not expired) in `Authorization` without a prefix. A `Bearer ` prefix works
  but is undocumented for JWTs: it is counted in `undocumented`.
- A body that is not a JSON object answers 400; an unknown route 404.
- Lists: a grpc-gateway server stream, HTTP 200 and chunked, one `{"result": …}` line per
  record, an empty body for none. A stream that fails part-way ends with one `{"error": …}`
  line, still HTTP 200; one that fails before its first line takes the error's status.
- Webhooks: each one due is sent in the background, on its own.

Knobs are plain attributes, changeable while it runs: `latency`, `faults`, `hang_seconds`,
`stream_error_after`, `stream_cut_after`, plus `fail_next()` for a scripted sequence (lists
and counts included). Webhooks: `webhook_deliveries`, `await webhooks_settled()`,
`await send_webhook()`.

State changes apply when a request arrives, before the simulated latency, as on a server
that answers slowly; an injected fault (503, 429, 500, timeout) changes nothing. A list is
read as it streams, so a change made meanwhile may show, as with a database cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import (
    Any,
    Concatenate,
    Final,
    Generic,
    Literal,
    ParamSpec,
    Self,
    TypeVar,
    cast,
    overload,
)

import aiohttp
import jwt
from aiohttp import web

from daemon.passkit import routes
from daemon.testing.fakepasskit_model import (
    NO_ANSWER,
    PassKitModel,
    Protocol,
    RecordedRequest,
    RepeatValidation,
    Webhook,
    ids_of,
    issued_ids,
)
from daemon.testing.fakepasskit_protos import (
    DEFAULT_LIST_LIMIT,
    HTTP_OF_CODE,
    PASS_EVENTS,
    PASS_STATUSES,
    ROUTE_COUNT_COUPONS,
    ROUTE_COUNT_MEMBERS,
    ROUTE_COUNT_TICKETS,
    ROUTE_CREATE_MESSAGE,
    ROUTE_CREATE_SINK,
    ROUTE_DELETE_SINK,
    ROUTE_GET_COUPON,
    ROUTE_GET_MEMBER,
    ROUTE_GET_MESSAGE,
    ROUTE_GET_PROGRAM,
    ROUTE_GET_SINK,
    ROUTE_GET_TEMPLATE,
    ROUTE_GET_TICKET,
    ROUTE_GET_TIER,
    ROUTE_LIST_COUPONS,
    ROUTE_LIST_MEMBERS,
    ROUTE_LIST_SINKS,
    ROUTE_LIST_TICKETS,
    ROUTE_REDEEM_COUPON,
    ROUTE_SEND_MESSAGE,
    ROUTE_SET_POINTS,
    ROUTE_UPDATE_COUPON,
    ROUTE_UPDATE_MEMBER,
    ROUTE_UPDATE_SINK,
    ROUTE_UPDATE_TICKET,
    ROUTE_VALIDATE_TICKET,
    UNAVAILABLE,
    WEBHOOK_METHOD,
    Answer,
    JsonObject,
    Stream,
    error,
)
from daemon.testing.fakepasskit_records import (
    MessageState,
    PassState,
    SinkSubscription,
    WebhookDelivery,
)

__all__ = [
    "DEFAULT_LIST_LIMIT",
    "IAT_LEEWAY_SECONDS",
    "NO_ANSWER",
    "PASS_EVENTS",
    "PASS_STATUSES",
    "ROUTE_COUNT_COUPONS",
    "ROUTE_COUNT_MEMBERS",
    "ROUTE_COUNT_TICKETS",
    "ROUTE_CREATE_MESSAGE",
    "ROUTE_CREATE_SINK",
    "ROUTE_DELETE_SINK",
    "ROUTE_GET_COUPON",
    "ROUTE_GET_MEMBER",
    "ROUTE_GET_MESSAGE",
    "ROUTE_GET_PROGRAM",
    "ROUTE_GET_SINK",
    "ROUTE_GET_TEMPLATE",
    "ROUTE_GET_TICKET",
    "ROUTE_GET_TIER",
    "ROUTE_LIST_COUPONS",
    "ROUTE_LIST_MEMBERS",
    "ROUTE_LIST_SINKS",
    "ROUTE_LIST_TICKETS",
    "ROUTE_REDEEM_COUPON",
    "ROUTE_SEND_MESSAGE",
    "ROUTE_SET_POINTS",
    "ROUTE_UPDATE_COUPON",
    "ROUTE_UPDATE_MEMBER",
    "ROUTE_UPDATE_SINK",
    "ROUTE_UPDATE_TICKET",
    "ROUTE_VALIDATE_TICKET",
    "WEBHOOK_METHOD",
    "Answer",
    "FakePassKit",
    "Faults",
    "JsonObject",
    "LatencyModel",
    "MessageState",
    "Outcome",
    "PassKitModel",
    "PassState",
    "Protocol",
    "RecordedRequest",
    "RepeatValidation",
    "SinkSubscription",
    "Stream",
    "Timeout",
    "Webhook",
    "WebhookDelivery",
    "ids_of",
    "issued_ids",
]

# p99 of a standard normal: turns "median and p99" into a lognormal's sigma.
_Z99 = 2.3263478740408408
# A token issued this far in the future is refused (clock skew PassKit would tolerate).
IAT_LEEWAY_SECONDS: Final = 60
# Lines written to a stream at a time: few enough writes for a million lines to stream fast.
_STREAM_BATCH: Final = 256

Timeout = Literal["timeout"]
Outcome = int | Timeout


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
class _StreamPlan:
    """Where an injected fault ends a stream: after `stop` lines (None: it does not), with an
    error line, or by dropping the connection (`cut`)."""

    stop: int | None = None
    cut: bool = False

    @property
    def status(self) -> int:
        if self.stop != 0:
            return 200
        # Nothing written yet: grpc-gateway sets the status from the error's code.
        return NO_ANSWER if self.cut else HTTP_OF_CODE[UNAVAILABLE]


_FAULT_ANSWERS: Final[dict[int, str]] = {
    503: "Server is unavailable. Back off for 250ms and repeat request until successful.",
    429: "rate limit exceeded",
    500: "unexpected error",
}
_NOT_AUTHORIZED: Final = error(401, "unauthorized")
# The last line of a stream failing part-way (grpc-gateway errorChunk: a google.rpc.Status).
_STREAM_ERROR: Final = (
    json.dumps(
        {"error": {"code": UNAVAILABLE, "message": "stream broken", "details": []}},
        separators=(",", ":"),
    )
    + "\n"
).encode()

# --- the model's surface, as the fake's -----------------------------------------------------------

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")


def _of_model(
    method: Callable[Concatenate[PassKitModel, _P], _R],
) -> Callable[Concatenate[FakePassKit, _P], _R]:
    """A method of the fake that is its model's, with the model's signature and docstring."""

    @functools.wraps(method)
    def forwarded(fake: FakePassKit, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        return method(fake.model, *args, **kwargs)

    return forwarded


class _OfModel(Generic[_T]):
    """An attribute of the fake that is its model's: read and set there."""

    def __init__(self, name: str = "") -> None:
        self._name = name

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = self._name or name

    @overload
    def __get__(self, fake: None, owner: type) -> Self: ...
    @overload
    def __get__(self, fake: FakePassKit, owner: type) -> _T: ...
    def __get__(self, fake: FakePassKit | None, owner: type) -> Self | _T:
        if fake is None:
            return self
        return cast(_T, getattr(fake.model, self._name))

    def __set__(self, fake: FakePassKit, value: _T) -> None:
        setattr(fake.model, self._name, value)


class FakePassKit:
    """`async with FakePassKit(key, secret) as fake:` or `start()`/`stop()`; `fake.url`.
    The keyword arguments from `issued` to `record_bodies`, and `wall_clock`, are the
    model's (`PassKitModel`); `fake.model` is the model itself."""

    # The model's knobs, state and reads (see PassKitModel), forwarded typed: the shell holds
    # the model it serves rather than being one, and callers keep saying `fake.points_of`.
    issued: _OfModel[Callable[[str], bool] | None] = _OfModel()
    message_field: _OfModel[str] = _OfModel()
    merge_metadata: _OfModel[bool] = _OfModel()
    repeat_validation: _OfModel[RepeatValidation] = _OfModel()
    record_bodies: _OfModel[bool] = _OfModel()
    # Timestamps and token expiry both read it; a test moves it under a running fake.
    _wall_clock: _OfModel[Callable[[], float]] = _OfModel("wall_clock")
    sinks: _OfModel[dict[str, SinkSubscription]] = _OfModel()
    webhook_deliveries: _OfModel[list[WebhookDelivery]] = _OfModel()
    requests: _OfModel[list[RecordedRequest]] = _OfModel()
    ignored_fields: _OfModel[Counter[str]] = _OfModel()
    force_status = _of_model(PassKitModel.force_status)
    clear_forced = _of_model(PassKitModel.clear_forced)
    add_pass = _of_model(PassKitModel.add_pass)
    add_generated_members = _of_model(PassKitModel.add_generated_members)
    install = _of_model(PassKitModel.install)
    uninstall = _of_model(PassKitModel.uninstall)
    invalidate = _of_model(PassKitModel.invalidate)
    delete = _of_model(PassKitModel.delete)
    add_program = _of_model(PassKitModel.add_program)
    add_tier = _of_model(PassKitModel.add_tier)
    add_template = _of_model(PassKitModel.add_template)
    reset_requests = _of_model(PassKitModel.reset_requests)
    count = _of_model(PassKitModel.count)
    mean_latency = _of_model(PassKitModel.mean_latency)
    state_of = _of_model(PassKitModel.state_of)
    messages_for = _of_model(PassKitModel.messages_for)
    bulk_messages_for = _of_model(PassKitModel.bulk_messages_for)
    bulk_recipients = _of_model(PassKitModel.bulk_recipients)
    message = _of_model(PassKitModel.message)
    points_of = _of_model(PassKitModel.points_of)
    tier_of = _of_model(PassKitModel.tier_of)
    metadata_of = _of_model(PassKitModel.metadata_of)
    redeemed = _of_model(PassKitModel.redeemed)
    validations_of = _of_model(PassKitModel.validations_of)

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        latency: LatencyModel | None = None,
        faults: Faults | None = None,
        seed: int = 0,
        issued: Callable[[str], bool] | None = None,
        message_field: str = "loyaltydMessage",
        merge_metadata: bool = True,
        repeat_validation: RepeatValidation = "invalid",
        record_bodies: bool = True,
        hang_seconds: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.model = PassKitModel(
            issued=issued,
            message_field=message_field,
            merge_metadata=merge_metadata,
            repeat_validation=repeat_validation,
            record_bodies=record_bodies,
            wall_clock=wall_clock,
            deliver=self._deliver_later,
        )
        self.latency = latency or LatencyModel()
        self.faults = faults or Faults()
        self.hang_seconds = hang_seconds
        # Every stream (a list) fails after this many lines: with a last `{"error": …}` line
        # (stream_error_after), or by dropping the connection mid-body (stream_cut_after).
        self.stream_error_after: int | None = None
        self.stream_cut_after: int | None = None
        # How long a webhook receiver may take to answer one delivery.
        self.webhook_timeout = 10.0
        self.tokens_seen: set[str] = set()
        # Things that work here but PassKit does not document ("Authorization: Bearer").
        self.undocumented: Counter[str] = Counter()
        self._key = api_key
        self._secret = api_secret
        self._rng = random.Random(seed)
        self._script: deque[Outcome] = deque()
        self._verified: dict[str, int] = {}  # token -> exp, so each token is decoded once
        self._stopping = asyncio.Event()
        self._runner: web.ServerRunner | None = None
        self._webhook_session: aiohttp.ClientSession | None = None
        self._webhook_tasks: set[asyncio.Task[None]] = set()
        self.url = ""

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
        """Stop serving; webhook deliveries still under way are cancelled."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for task in self._webhook_tasks:
            task.cancel()
        await asyncio.gather(*self._webhook_tasks, return_exceptions=True)
        if self._webhook_session is not None:
            await self._webhook_session.close()
            self._webhook_session = None

    async def __aenter__(self) -> FakePassKit:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def fail_next(self, *outcomes: Outcome) -> None:
        """Answer the next requests (any route) with these statuses or "timeout", in order."""
        self._script.extend(outcomes)

    # --- webhooks ------------------------------------------------------------------------------

    async def webhooks_settled(self) -> None:
        """Wait until every webhook delivery started so far is answered or has failed."""
        while self._webhook_tasks:
            await asyncio.wait(set(self._webhook_tasks))

    async def send_webhook(
        self, url: str, event: str, pass_id: str, method: str | None = None
    ) -> WebhookDelivery:
        """Send one delivery by hand, now, about the pass as it is (or was, if deleted): a
        duplicate, a late event, one for a pass that is gone."""
        webhook = self.model.webhook(url, event, pass_id, method)
        await self._deliver(webhook)
        return webhook.delivery

    def _deliver_later(self, webhook: Webhook) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(webhook))
        self._webhook_tasks.add(task)
        task.add_done_callback(self._webhook_tasks.discard)

    async def _deliver(self, webhook: Webhook) -> None:
        delivery = webhook.delivery
        if self._webhook_session is None:
            timeout = aiohttp.ClientTimeout(total=self.webhook_timeout)
            self._webhook_session = aiohttp.ClientSession(timeout=timeout)
        request = self._webhook_session.request(delivery.method, delivery.url, json=webhook.body)
        try:
            async with request as response:
                await response.read()
                delivery.status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"
        except asyncio.CancelledError:
            delivery.error = "cancelled: the fake stopped"
            raise

    # --- request path --------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        found = routes.endpoint_of(request.method, request.path)
        if found is None:
            return _response(error(404, f"no route {request.method} {request.path}"))
        route, path = found[0].route, found[1]
        body = await _read_body(request)
        outcome = self._next_fault()
        if outcome == "timeout":
            self._record(route, path, body, NO_ANSWER, 0.0)
            return await self._hang()
        answer = self._answer(route, path, body, outcome, request.headers.get("Authorization"))
        plan = self._stream_plan()
        delay = self.latency.sample(self._rng)
        status = plan.status if isinstance(answer, Stream) else answer.status
        self._record(route, path, body, status, delay)
        if delay:
            await asyncio.sleep(delay)
        if isinstance(answer, Stream):
            return await _stream(request, answer, plan)
        return _response(answer)

    def _answer(
        self,
        route: str,
        path: tuple[str, ...],
        body: Any,
        fault: Outcome | None,
        authorization: str | None,
    ) -> Answer | Stream:
        if isinstance(fault, int):
            return self._fault_answer(fault)
        if not self._authorized(authorization):
            return _NOT_AUTHORIZED
        if body is _INVALID_JSON or (body is not None and not isinstance(body, dict)):
            return error(400, "invalid JSON body")
        return self.model.answer(route, path, body if body is not None else {})

    def _stream_plan(self) -> _StreamPlan:
        error_after, cut = self.stream_error_after, self.stream_cut_after
        if cut is not None and (error_after is None or cut <= error_after):
            return _StreamPlan(cut, cut=True)
        return _StreamPlan(error_after)

    def _fault_answer(self, status: int) -> Answer:
        headers = None
        if status == 429 and self.faults.retry_after is not None:
            headers = {"Retry-After": self.faults.retry_after}
        return error(status, _FAULT_ANSWERS.get(status, f"injected {status}"), headers)

    def _next_fault(self) -> Outcome | None:
        if self._script:
            return self._script.popleft()
        return self.faults.draw(self._rng) if self.faults.any else None

    async def _hang(self) -> web.StreamResponse:
        # Longer than any sane client timeout; ends early when the fake stops.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.hang_seconds)
        return _response(error(504, "gateway timeout"))

    def _record(
        self, route: str, path: tuple[str, ...], body: Any, status: int, latency: float
    ) -> None:
        at = asyncio.get_running_loop().time()
        self.model.record(route, path, body, status=status, at=at, latency=latency)

    # --- auth ----------------------------------------------------------------------------------

    def _authorized(self, header: str | None) -> bool:
        if not header:
            return False
        token = header
        if header.startswith("Bearer "):
            # Long-lived tokens need it; for a signed JWT PassKit documents no prefix.
            self.undocumented["Authorization: Bearer"] += 1
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
        return self.model.wall_clock() < exp

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
        iat, exp = claims.get("iat"), claims.get("exp")
        if claims.get("uid") != self._key or not isinstance(exp, int):
            return None
        if not isinstance(iat, int) or iat > self.model.wall_clock() + IAT_LEEWAY_SECONDS:
            return None
        return exp


# --- plumbing ----------------------------------------------------------------------------------


def _route_of(method: str, path: str) -> tuple[str | None, tuple[str, ...]]:
    found = routes.endpoint_of(method, path)
    if found is None:
        return None, ()
    return found[0].route, found[1]


# Answered 400, like anything else that is not a JSON object.
_INVALID_JSON: Final = object()


async def _read_body(request: web.BaseRequest) -> Any:
    if not request.body_exists:
        return None
    try:
        return json.loads(await request.read())
    except ValueError:
        return _INVALID_JSON


def _response(answer: Answer) -> web.Response:
    return web.Response(
        status=answer.status,
        body=json.dumps(answer.payload).encode(),
        content_type="application/json",
        headers=answer.headers,
    )


async def _stream(
    request: web.BaseRequest, stream: Stream, plan: _StreamPlan
) -> web.StreamResponse:
    """Write a stream as grpc-gateway's ForwardResponseStream does: chunked, a line per
    record, each flushed, and an injected failure where `plan` puts it."""
    if plan.stop == 0 and not plan.cut:
        # Failed before the first record: the status comes from the error's code.
        return web.Response(status=plan.status, body=_STREAM_ERROR, content_type="application/json")
    response = web.StreamResponse(status=200)
    response.content_type = "application/json"
    response.enable_chunked_encoding()
    await response.prepare(request)
    lines = stream.lines if plan.stop is None else itertools.islice(stream.lines, plan.stop)
    try:
        written = await _write_lines(response, lines)
        if written == plan.stop and plan.cut:
            _drop(request)
            return response
        if written == plan.stop:
            await response.write(_STREAM_ERROR)
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away mid-stream
    return response


async def _write_lines(response: web.StreamResponse, lines: Iterator[str]) -> int:
    written = 0
    while batch := list(itertools.islice(lines, _STREAM_BATCH)):
        await response.write("".join(batch).encode())
        written += len(batch)
        await asyncio.sleep(0)  # a long stream leaves room for other requests
    return written


def _drop(request: web.BaseRequest) -> None:
    """End the connection with the chunked body unfinished, as a dropped network would:
    what was written still reaches the client, then the connection closes."""
    transport = request.transport
    if transport is not None:
        transport.close()
