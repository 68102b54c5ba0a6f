"""structlog set-up: JSON off a TTY, console on one, secrets scrubbed from every event.

Events are constant snake_case names (`campaign_claimed`); ids are bound with
`structlog.contextvars.bound_contextvars(campaign_id=...)` so every line of a unit of work
carries them.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from daemon.core.dsn import redact as redact_passwords

# A JWT is three base64url segments; the header of every HS256 token starts with "eyJ".
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")
REDACTED = "[redacted]"


class SecretScrubber:
    """Processor replacing configured secrets and anything shaped like a JWT."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = redact_passwords(text)
        return _JWT.sub(REDACTED, text) if "eyJ" in text else text

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._clean(v) for v in value)
        if isinstance(value, BaseException):
            return self.scrub(repr(value))
        return value

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            event_dict[key] = self._clean(value)
        return event_dict


_SCRUBBER = SecretScrubber()


def scrub(text: str) -> str:
    """`text` with every configured secret, DSN password and JWT redacted: for text that is
    stored (a sync's last_error, a campaign's error) rather than logged."""
    return _SCRUBBER.scrub(text)


def configure_logging(level: str = "INFO", fmt: str = "auto", secrets: Iterable[str] = ()) -> None:
    """Configure structlog, and route standard-library logging (aiohttp, asyncio, asyncpg,
    APScheduler) through the same processors: one format, one scrubber, JSON off a TTY."""
    global _SCRUBBER
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    _SCRUBBER = SecretScrubber(secrets)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    processors: list[Any] = [
        *shared,
        structlog.processors.format_exc_info,
        _SCRUBBER,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _SCRUBBER,
                renderer,
            ],
        )
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # aiohttp.access would log every request line of the HTTP API; keep it quiet.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # APScheduler narrates every run at INFO; the birthday job logs its own events.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
