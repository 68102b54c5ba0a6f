"""Member CSV import (seed 002's upload flow): users upserted by email, passes by member id.

The file is checked to be UTF-8 text before the database is touched, then streamed: each
batch of rows is validated (daemon.members.rules, pure) and written with a few set-based
statements, all inside ONE transaction. A file that turns out unreadable half-way therefore
writes nothing; bad rows are reported and skipped while good rows are written.

Writing is idempotent: a user whose stored values already match is not touched, an empty cell
never erases a stored value, a pass already linked to its member stays as it is — importing
the same file twice changes nothing the second time and reports those rows `unchanged`.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import itertools
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO

from daemon.core.logs import get_logger
from daemon.domain.members import WrittenUser
from daemon.members.rules import (
    CreatePass,
    Duplicates,
    Header,
    ImportAborted,
    LinkPass,
    Member,
    PassPlan,
    Rejected,
    choose_delimiter,
    is_blank,
    plan_pass,
    read_header,
    row_outcome,
    validate_row,
)
from daemon.store import members as store
from daemon.store.members import ImportWriter
from daemon.store.pool import Pool

log = get_logger(__name__)

BATCH_SIZE = 5000
_LARGEST_CELL = 64 * 1024 * 1024
OUTCOMES = ("created", "updated", "unchanged", "rejected")
# A pass another writer created between our check and our insert: the row is re-importable.
LOST = "lost"
# Members are shared across programs: another program's member keeps their details.
SHARED_MEMBER_NOTE = "not changed: member of another program"
Progress = Callable[[int, int], None]  # (rows done, rows expected)


@dataclass(frozen=True)
class RowResult:
    """What happened to one data row of the file."""

    line: int
    email: str | None
    member_id: str | None
    outcome: str  # created | updated | unchanged | rejected
    detail: str  # the reason when rejected; otherwise what changed
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImportReport:
    rows: tuple[RowResult, ...]
    ignored_columns: tuple[str, ...] = ()

    @property
    def counts(self) -> dict[str, int]:
        found = Counter(r.outcome for r in self.rows)
        return {outcome: found.get(outcome, 0) for outcome in OUTCOMES}

    @property
    def rejected(self) -> int:
        return self.counts["rejected"]

    @property
    def warned(self) -> int:
        return sum(1 for r in self.rows if r.warnings)

    def needing_attention(self) -> Iterator[RowResult]:
        return (r for r in self.rows if r.outcome == "rejected" or r.warnings)


async def import_users(
    pool: Pool,
    path: Path,
    program_id: uuid.UUID,
    *,
    today: date,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
) -> ImportReport:
    """Import `path` into `program_id`; raise ImportAborted (nothing written) if the file or
    the program cannot be used. `today` bounds birth dates (none in the future)."""
    expected = await asyncio.to_thread(check_file, path)
    results: list[RowResult] = []
    async with store.import_transaction(pool, program_id) as writer:
        if writer is None:
            raise ImportAborted(f"no program with id {program_id}")
        with _open(path) as handle:
            rows = await asyncio.to_thread(_RowReader, handle, today)
            while batch := await asyncio.to_thread(rows.next_batch, batch_size):
                results.extend(await _write_batch(writer, program_id, batch))
                if progress is not None:
                    progress(len(results), max(expected, len(results)))
    report = ImportReport(rows=tuple(results), ignored_columns=rows.header.ignored)
    log.info("import_finished", program_id=str(program_id), **report.counts, warned=report.warned)
    return report


# --- reading the file ----------------------------------------------------------------------


def check_file(path: Path, chunk_size: int = 1 << 20) -> int:
    """Decode the whole file once before touching the database: raise ImportAborted if it is
    not UTF-8 (saying where), return the number of lines after the header (for progress)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ImportAborted(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        return _count_lines(handle, chunk_size)


def _count_lines(handle: IO[bytes], chunk_size: int) -> int:
    decoder = codecs.getincrementaldecoder("utf-8")()
    newlines = offset = 0
    last = b""
    while True:
        chunk = handle.read(chunk_size)
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise _not_utf8(exc, newlines, offset - (len(exc.object) - len(chunk))) from None
        if not chunk:
            break
        newlines += chunk.count(b"\n")
        offset += len(chunk)
        last = chunk[-1:]
    if offset == 0:
        raise ImportAborted("the file is empty")
    lines = newlines + (0 if last == b"\n" else 1)
    return max(lines - 1, 0)


def _not_utf8(exc: UnicodeDecodeError, newlines_before: int, start: int) -> ImportAborted:
    # exc.object is what the decoder was looking at: bytes held over from the last chunk, then
    # this chunk; `start` is where that began in the file.
    line = newlines_before + exc.object.count(b"\n", 0, exc.start) + 1
    byte = exc.object[exc.start : exc.start + 1].hex()
    return ImportAborted(
        f"the file is not UTF-8 text (line {line}, byte {start + exc.start}: 0x{byte}); "
        'save it as "CSV UTF-8" and import it again'
    )


def _open(path: Path) -> IO[str]:
    # utf-8-sig drops the byte-order mark Excel puts in front of "CSV UTF-8" files.
    return path.open(encoding="utf-8-sig", newline="")


class _RowReader:
    """Validated rows of an open CSV file, a batch at a time (runs in a worker thread)."""

    def __init__(self, handle: IO[str], today: date) -> None:
        # The csv module refuses a cell over 128 KiB by aborting the whole file; let it through
        # so that the row rules reject that one row (every column has a length limit).
        csv.field_size_limit(max(csv.field_size_limit(), _LARGEST_CELL))
        first = handle.readline()
        if not first.strip():
            raise ImportAborted("the file has no header row (the first line is empty)")
        self._reader = csv.reader(
            itertools.chain([first], handle), delimiter=choose_delimiter(first)
        )
        self.header: Header = read_header(next(self._reader))
        self._today = today
        self._duplicates = Duplicates()

    def next_batch(self, size: int) -> list[Member | Rejected]:
        batch: list[Member | Rejected] = []
        try:
            for record in self._reader:
                if not is_blank(record):
                    batch.append(self._validate(record))
                if len(batch) >= size:
                    break
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ImportAborted(f"line {self._reader.line_num}: unreadable CSV ({exc})") from None
        return batch

    def _validate(self, record: Sequence[str]) -> Member | Rejected:
        row = validate_row(self._reader.line_num, record, self.header, self._today)
        return self._duplicates.check(row) if isinstance(row, Member) else row


# --- writing a batch -----------------------------------------------------------------------


async def _write_batch(
    writer: ImportWriter, program_id: uuid.UUID, batch: Sequence[Member | Rejected]
) -> list[RowResult]:
    members = [row for row in batch if isinstance(row, Member)]
    plans = await _plan_passes(writer, program_id, members)
    accepted = [m for m in members if not isinstance(plans[m.line], Rejected)]
    users = await _upsert_users(writer, program_id, accepted)
    pass_outcomes = await _write_passes(writer, program_id, accepted, plans, users)
    return [_result(row, plans, users, pass_outcomes) for row in batch]


async def _plan_passes(
    writer: ImportWriter, program_id: uuid.UUID, members: Sequence[Member]
) -> dict[int, PassPlan | Rejected]:
    member_ids = [m.member_id for m in members if m.member_id]
    passkit_ids = [m.passkit_internal_id for m in members if m.passkit_internal_id]
    if not member_ids:
        return {m.line: None for m in members}
    existing = await writer.existing_passes(
        program_id, member_ids=member_ids, passkit_ids=passkit_ids
    )
    by_member_id = {
        p.external_id: p for p in existing if p.program_id == program_id and p.external_id
    }
    by_passkit_id = {p.passkit_internal_id: p for p in existing if p.passkit_internal_id}
    return {m.line: plan_pass(m, by_member_id, by_passkit_id) for m in members}


async def _upsert_users(
    writer: ImportWriter, program_id: uuid.UUID, members: Sequence[Member]
) -> dict[str, WrittenUser]:
    if not members:
        return {}
    rows = await writer.upsert_users(
        program_id,
        emails=[m.email for m in members],
        first_names=[m.first_name for m in members],
        last_names=[m.last_name for m in members],
        birth_dates=[m.birth_date for m in members],
        phone_numbers=[m.phone_number for m in members],
        zips=[m.zip for m in members],
    )
    return {user.email_key: user for user in rows}


async def _write_passes(
    writer: ImportWriter,
    program_id: uuid.UUID,
    members: Sequence[Member],
    plans: dict[int, PassPlan | Rejected],
    users: dict[str, WrittenUser],
) -> dict[int, str]:
    """Pass outcome per line: created / updated / unchanged, or `lost` when another writer
    got there between our check and our write."""
    with_user = [m for m in members if _user_id(users, m) is not None]
    creates = [m for m in with_user if isinstance(plans[m.line], CreatePass)]
    links: list[tuple[Member, LinkPass]] = [
        (m, plan) for m in with_user if isinstance(plan := plans[m.line], LinkPass)
    ]
    outcomes = await _create_passes(writer, program_id, creates, users)
    outcomes.update(await _link_passes(writer, links, users))
    return outcomes


def _user_id(users: dict[str, WrittenUser], member: Member) -> uuid.UUID | None:
    user = users.get(member.email_key)
    return user.user_id if user is not None else None


async def _create_passes(
    writer: ImportWriter,
    program_id: uuid.UUID,
    creates: Sequence[Member],
    users: dict[str, WrittenUser],
) -> dict[int, str]:
    if not creates:
        return {}
    made = await writer.create_passes(
        program_id,
        member_ids=[m.member_id for m in creates],
        user_ids=[_user_id(users, m) for m in creates],
        passkit_ids=[m.passkit_internal_id for m in creates],
    )
    return {m.line: "created" if m.member_id in made else LOST for m in creates}


async def _link_passes(
    writer: ImportWriter,
    links: Sequence[tuple[Member, LinkPass]],
    users: dict[str, WrittenUser],
) -> dict[int, str]:
    if not links:
        return {}
    changed = await writer.link_passes(
        pass_ids=[plan.existing.id for _, plan in links],
        user_ids=[_user_id(users, m) for m, _ in links],
        passkit_ids=[m.passkit_internal_id for m, _ in links],
    )
    return {m.line: "updated" if plan.existing.id in changed else "unchanged" for m, plan in links}


def _result(
    row: Member | Rejected,
    plans: dict[int, PassPlan | Rejected],
    users: dict[str, WrittenUser],
    pass_outcomes: dict[int, str],
) -> RowResult:
    if isinstance(row, Rejected):
        return RowResult(row.line, row.email, row.member_id, "rejected", row.reason)
    plan = plans[row.line]
    if isinstance(plan, Rejected):
        return RowResult(row.line, row.email, row.member_id, "rejected", plan.reason, row.warnings)
    user = users.get(row.email_key)
    pass_outcome = pass_outcomes.get(row.line)
    if user is None or user.user_id is None or pass_outcome == LOST:
        reason = "changed by someone else during the import; import the file again"
        return RowResult(row.line, row.email, row.member_id, "rejected", reason, row.warnings)
    detail = f"user {user.outcome}"
    if user.withheld:
        detail += f" ({SHARED_MEMBER_NOTE})"
    if pass_outcome is not None:
        detail += f", pass {pass_outcome}"
    outcome = row_outcome(user.outcome, pass_outcome)
    return RowResult(row.line, row.email, row.member_id, outcome, detail, row.warnings)
