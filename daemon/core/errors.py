"""The one exception tree of loyaltyd.

    LoyaltydError
     ├── ConfigError                      bad or missing configuration; fix it and restart
     │    └── DatabaseUnusable            DATABASE_URL (or the embedded server) cannot serve
     ├── WorkRefused                      a job that cannot be done as stored (a template that
     │    │                               does not render, a protocol PassKit has no route for,
     │    │                               a negative balance…): failed, not retried
     │    └── UnknownProtocol             a pass protocol outside MEMBERSHIP/COUPON/EVENT_TICKET
     ├── Fenced                           this daemon lost its heartbeat: it starts no PassKit
     │                                    call (the job stays with whoever holds it now)
     ├── TransientError                   worth another try later (`retry_after`: a hint, s)
     │    └── TransientPassKitError       timeouts, connection errors, 429, 500/502/503/504
     ├── PassKitError                     anything PassKit (or the road to it) said no to
     │    ├── TransientPassKitError       (also a TransientError; `status`)
     │    │    └── TransportFailed        no answer at all: connection failed or timed out
     │    ├── PermanentPassKitError       retrying cannot help: 400/403/404/409/other 4xx
     │    │    ├── PayloadTooLarge        refused here, before sending (> 10,000 bytes)
     │    │    └── Unauthorized           401 that persisted after one re-signed retry
     │    └── MalformedRecord             a record or webhook body unlike PassKit's definitions
     ├── CampaignInputError               a campaign that cannot be sent as written (the
     │                                    admin's to fix: push_campaigns.error, or a 400)
     └── ApiRequestError                  an HTTP API request that cannot be served as sent

The PassKit transport maps aiohttp exceptions (`daemon.passkit.transport`) and the client
maps status codes into this tree at the edge (`raise … from exc`), so nothing above them needs
to know aiohttp. Callers decide on the class: transient → retry later, permanent → record once
and move on. Database failures are asyncpg's own, caught as one tuple
(`daemon.store.errors.DATABASE_ERRORS`).
"""

from __future__ import annotations


class LoyaltydError(Exception):
    """Base of every error loyaltyd raises on purpose."""


class ConfigError(LoyaltydError):
    """The configuration cannot work (missing value, contradictory settings). The message is
    one sentence for the user; the CLI prints it and exits 2, without a traceback."""


class DatabaseUnusable(ConfigError):
    """The configured database cannot be reached or used as loyaltyd needs it."""


class WorkRefused(LoyaltydError):
    """One job cannot be done as it stands; retrying cannot help. The message is stored as
    the row's error."""


class UnknownProtocol(WorkRefused, ValueError):
    """A pass protocol PassKit has no route for in loyaltyd (MEMBERSHIP, COUPON and
    EVENT_TICKET are known). Also a ValueError: it is one, for callers outside the engine."""


class Fenced(LoyaltydError):
    """This daemon has not reached the database for so long that the others may have taken
    its work over: it starts no PassKit call, and the job is left to whoever holds it now."""


class TransientError(LoyaltydError):
    """The same work may succeed later (a service down, a connection lost): it goes back to
    its queue with back-off. `retry_after` is the other side's hint in seconds, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- PassKit ---------------------------------------------------------------------------------


class PassKitError(LoyaltydError):
    """A PassKit call failed; `status` is the HTTP status, None when no response arrived."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientPassKitError(PassKitError, TransientError):
    """The same request may succeed later; `retry_after` is PassKit's hint in seconds."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        PassKitError.__init__(self, message, status=status)
        self.retry_after = retry_after


class PermanentPassKitError(PassKitError):
    """The same request will fail again: record the failure, do not retry."""


class TransportFailed(TransientPassKitError):
    """No answer at all: the connection failed or timed out (`__cause__` says which)."""


class PayloadTooLarge(PermanentPassKitError):
    """PassKit rejects pass content over 10,000 bytes and warns that retrying it trips its
    rate limits, so such a body is refused before it is sent."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"request body is {size} bytes, PassKit accepts at most {limit}")
        self.size = size
        self.limit = limit


class Unauthorized(PermanentPassKitError):
    """PassKit refused our credentials even with a freshly signed token."""

    def __init__(self, message: str = "PassKit answered 401 twice, with a fresh token") -> None:
        super().__init__(message, status=401)


class MalformedRecord(PassKitError, ValueError):
    """A member record of a list, or a webhook's body, that does not follow PassKit's
    definitions (not an object, an unknown status, event or protocol, a bad id or time): the
    record is skipped and counted, the webhook answered 400. Also a ValueError."""


# --- campaigns -------------------------------------------------------------------------------


class CampaignInputError(LoyaltydError):
    """A push campaign cannot be sent as written (unknown program or segment, bad text, bad
    segment parameters, bad CSV or URL). The message is for the admin: it is what the daemon
    stores in `push_campaigns.error` and what the HTTP API answers with a 400."""


# --- HTTP API --------------------------------------------------------------------------------


class ApiRequestError(LoyaltydError):
    """An HTTP API request that cannot be served as sent (bad JSON, missing or mistyped
    field, body too large). The message is the answer's `error`; `status` its HTTP status."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
