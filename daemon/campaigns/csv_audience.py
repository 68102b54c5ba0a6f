"""Member ids of a CSV campaign, downloaded from its `csv_upload_url`.

https only, from an allow-listed host (LOYALTYD_CSV_ALLOWED_HOSTS), at most
LOYALTYD_CSV_MAX_BYTES within LOYALTYD_CSV_TIMEOUT_SECONDS, redirects not followed (a
redirect could lead off the allow-list). The file needs a `member_id` column; other columns
are ignored. Every problem is a CampaignInputError whose text the admin reads in
`push_campaigns.error`.

This is the second aiohttp client of the daemon (the first is the PassKit client): a plain
GET of one file, kept here so that the PassKit client stays about PassKit.
"""

from __future__ import annotations

import csv
import io
import ssl
from typing import Final

import aiohttp

from daemon.campaigns.rules import check_member_ids
from daemon.core.config import Settings
from daemon.core.csvtext import delimiter_for, header_names
from daemon.core.errors import CampaignInputError
from daemon.domain.campaigns import CsvUrl

MEMBER_ID_COLUMN: Final = "member_id"
_CHUNK_BYTES: Final = 64 * 1024
_MAX_HEADER_CHARS: Final = 10_000
# The csv module's own default limit, held to whatever another reader in the process set.
_MAX_CELL_CHARS: Final = 131_072


class CsvFetcher:
    """Downloads and reads a member-id CSV. `ssl_context` replaces the system trust store
    (tests serve https with a self-signed certificate)."""

    def __init__(self, settings: Settings, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._max_bytes = settings.loyaltyd_csv_max_bytes
        self._timeout = settings.loyaltyd_csv_timeout_seconds
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True

    async def member_ids(self, url: CsvUrl) -> tuple[str, ...]:
        """The member ids of the CSV at `url`, which campaign validation checked."""
        return parse_member_csv(await self._download(url))

    async def _download(self, url: CsvUrl) -> bytes:
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url, allow_redirects=False, ssl=self._ssl) as response,
            ):
                _check_response(response, self._max_bytes)
                return await _read_at_most(response.content, self._max_bytes)
        except TimeoutError as exc:
            raise CampaignInputError(
                f"downloading the CSV took longer than {self._timeout:g} s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise CampaignInputError(f"could not download the CSV: {exc}") from exc


def _check_response(response: aiohttp.ClientResponse, max_bytes: int) -> None:
    if 300 <= response.status < 400:
        raise CampaignInputError(
            f"the CSV URL redirects (HTTP {response.status}); give the final https URL"
        )
    if response.status != 200:
        raise CampaignInputError(f"the CSV server answered HTTP {response.status}")
    if response.content_length is not None and response.content_length > max_bytes:
        raise _too_large(max_bytes)


async def _read_at_most(stream: aiohttp.StreamReader, max_bytes: int) -> bytes:
    """The body, or CampaignInputError as soon as it grows past `max_bytes` (a server may
    send more than its Content-Length said, or none at all)."""
    buffer = bytearray()
    async for chunk in stream.iter_chunked(_CHUNK_BYTES):
        buffer += chunk
        if len(buffer) > max_bytes:
            raise _too_large(max_bytes)
    return bytes(buffer)


def _too_large(max_bytes: int) -> CampaignInputError:
    return CampaignInputError(f"the CSV is larger than {max_bytes:,} bytes")


def parse_member_csv(data: bytes) -> tuple[str, ...]:
    """Member ids from the `member_id` column (any case; a BOM, blanks and duplicates are
    ignored; `,` `;` tab or `|` separated; CRLF, LF or CR line ends), in file order.

    Whatever the bytes, the result is the ids or a CampaignInputError the admin can read:
    the campaign then ends FAILED after this one download, never stays PROCESSING."""
    try:
        return _parse(data)
    except CampaignInputError:
        raise
    except (csv.Error, ValueError, IndexError) as exc:  # a reader's surprise, still input
        raise CampaignInputError(f"the CSV could not be read: {exc}") from exc


def _parse(data: bytes) -> tuple[str, ...]:
    if b"\x00" in data:
        raise CampaignInputError(
            "the CSV contains NUL bytes: it is not a text CSV (export it as CSV UTF-8)"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CampaignInputError("the CSV is not UTF-8 text") from exc
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    header, _, _ = text.partition("\n")
    if len(header) > _MAX_HEADER_CHARS:
        raise CampaignInputError(
            f"the CSV's first line is {len(header):,} characters long; a header of column "
            f"names is at most {_MAX_HEADER_CHARS:,}"
        )
    delimiter, column = _find_member_column(header)
    ids = check_member_ids(_column_values(text, delimiter, column))
    if not ids:
        raise CampaignInputError("the CSV lists no member ids")
    return ids


def _find_member_column(header: str) -> tuple[str, int]:
    delimiter = delimiter_for(header, MEMBER_ID_COLUMN, dashes=True)
    if delimiter is not None:
        names = header_names(header, delimiter, dashes=True)
        return delimiter, names.index(MEMBER_ID_COLUMN)
    found = header.strip()[:120] or "nothing"
    raise CampaignInputError(
        f"the CSV has no {MEMBER_ID_COLUMN} column in its first line (found: {found})"
    )


def _column_values(text: str, delimiter: str, column: int) -> list[str]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    values: list[str] = []
    try:
        next(reader, None)  # the header
        for row in reader:
            if any(len(cell) > _MAX_CELL_CHARS for cell in row):
                raise csv.Error("field larger than field limit")
            if len(row) > column:
                values.append(row[column])
    except csv.Error as exc:
        reason = str(exc)
        if "field larger than field limit" in reason:
            reason = f"a cell is longer than {_MAX_CELL_CHARS:,} characters"
        raise CampaignInputError(
            f"the CSV is malformed at line {reader.line_num}: {reason}"
        ) from exc
    return values
