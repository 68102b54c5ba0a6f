"""What the HTTP API accepts: request bodies checked field by field, and API keys compared in
constant time. Pure: no aiohttp, no database.

Bodies are JSON objects with camelCase fields, validated strictly (a number where text is
expected is an error, not converted) and with unknown fields refused, so a typo such as
`segmnet` is reported instead of silently sending to everyone. Every problem is listed in one
message, so the caller fixes them at once. The campaign rules themselves (message length,
placeholders, segments and their parameters) are checked by
`daemon.campaigns.planner.create_campaign`, the same checks the daemon applies to a row
inserted by Softr.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic.alias_generators import to_camel

from daemon.campaigns.rules import SEGMENT_PARAMETERS
from daemon.core.errors import ApiRequestError

API_KEY_HEADER = "X-API-Key"

_Body = TypeVar("_Body", bound="_RequestBody")


class _RequestBody(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        extra="forbid",
        strict=True,
        frozen=True,
        hide_input_in_errors=True,
    )


class BroadcastRequest(_RequestBody):
    """`POST /api/notify/broadcast`: a push campaign, as a `push_campaigns` row would say it."""

    program_id: uuid.UUID
    message: str
    segment: str = "ALL"
    name: str | None = Field(default=None, max_length=200)
    scheduled_at: AwareDatetime | None = None
    draft: bool = False
    min_tier_points: int | None = None
    min_points: int | None = None
    inactive_days: int | None = None
    zip_codes: list[str] | None = None
    member_ids: list[str] | None = None
    csv_upload_url: str | None = None

    def segment_params(self) -> dict[str, Any]:
        """The segment parameters given, as `create_campaign` keywords."""
        given = {name: getattr(self, name) for name in SEGMENT_PARAMETERS}
        return {name: value for name, value in given.items() if value is not None}


class BirthdayRunRequest(_RequestBody):
    """`POST /api/notify/birthday-run`: an empty body (or `{}`) runs every program."""

    program_id: uuid.UUID | None = None


def parse_broadcast(body: bytes) -> BroadcastRequest:
    if not body.strip():
        raise ApiRequestError(
            'the request body is empty; send a JSON object such as {"programId": "…", '
            '"message": "…", "segment": "ALL"}'
        )
    return _parse(BroadcastRequest, body)


def parse_birthday_run(body: bytes) -> BirthdayRunRequest:
    if not body.strip():
        return BirthdayRunRequest()
    return _parse(BirthdayRunRequest, body)


def parse_campaign_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ApiRequestError(f"campaign id {text[:64]!r} is not a UUID") from None


def _parse(model: type[_Body], body: bytes) -> _Body:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise ApiRequestError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """One line naming every field at fault (by its JSON name), never echoing the input."""
    problems: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        if error["type"] == "json_invalid":
            detail = error["msg"].removeprefix("Invalid JSON: ")
            return f"the request body is not valid JSON ({detail})"
        if error["type"] == "model_type":
            return "the request body must be a JSON object"
        field = ".".join(str(part) for part in error["loc"])
        problems.append(f"{field}: {error['msg']}")
    return "; ".join(problems)


class ApiKeys:
    """The keys of LOYALTYD_API_KEYS. None configured = the API refuses everyone."""

    def __init__(self, keys: Sequence[SecretStr]) -> None:
        self._keys = [key.get_secret_value().encode() for key in keys]

    @property
    def configured(self) -> bool:
        return bool(self._keys)

    def accepts(self, given: str | None) -> bool:
        if not given or not self._keys:
            return False
        candidate = given.encode("utf-8", "replace")
        matched = False
        for key in self._keys:
            # every key is compared, so the time taken does not tell which one (if any) matched
            matched |= hmac.compare_digest(candidate, key)
        return matched

    @staticmethod
    def label(given: str | None) -> str:
        """How the columns that say who did something name a key: the start of its SHA-256,
        which tells keys apart and gives nothing of the key away."""
        digest = hashlib.sha256((given or "").encode("utf-8", "replace")).hexdigest()
        return f"api key {digest[:8]}"

    def refusal(self, given: str | None) -> str | None:
        """Why a request carrying `given` is refused; None when it is accepted."""
        if not self._keys:
            return "the API is disabled: no LOYALTYD_API_KEYS configured"
        if not given:
            return f"missing {API_KEY_HEADER} header"
        return None if self.accepts(given) else "invalid API key"
