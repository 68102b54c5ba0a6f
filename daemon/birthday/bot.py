"""The birthday bot (SPEC §3.3): each program's members born on its local today get its gift.

Program-centric: every program with `birthday_bot_enabled` is celebrated in its own timezone
with its own points and message; one failing program is logged and the others go on.

A gift is one database transaction: the `birthday_logs` row (unique per pass and year) and
`process_membership_transaction(kind BIRTHDAY, message)`. The pass sync picks the transaction
up after commit and puts the balance and the message on the pass; nothing here talks to
PassKit. Any number of ticks, by any number of daemons, give a pass at most one gift a year:
the second insert of the log row waits for the first and then does nothing.

Who gets what:
- active MEMBERSHIP passes whose user's birth month/day is the program's local today
  (29 February birthdays on 28 February in other years); users without a birth date, inactive
  passes, coupons and tickets are never selected;
- installed passes get the points and the rendered message, passes not (or no longer) in a
  wallet get the points only (message NULL);
- `birthday_reward_points = 0` means message only: installed passes get a 0-point BIRTHDAY
  transaction carrying the message, passes not in a wallet get nothing;
- `{points}` in the message is the balance after the gift.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.interval import IntervalTrigger
from structlog.contextvars import bound_contextvars

import daemon.birthday.rules as rules
from daemon.core.clock import wait_any
from daemon.core.config import Settings
from daemon.core.logs import get_logger
from daemon.core.templating import Template, TemplateError, parse_template
from daemon.domain.birthdays import BirthdayMember, BirthdayProgram
from daemon.store import birthdays as store
from daemon.store.pool import Pool

log = get_logger(__name__)

JOB_ID = "birthday_bot"


@dataclass(frozen=True)
class ProgramBirthdays:
    """What one run did for one program. `error` set: the program was not celebrated."""

    program_id: uuid.UUID
    program_name: str | None
    local_date: date | None = None
    points: int = 0
    due: int = 0  # passes selected as due today and not yet celebrated this year
    gifted: int = 0  # gifts committed by this run
    messaged: int = 0  # of those, how many carried the message (installed passes)
    already_gifted: int = 0  # celebrated meanwhile by another tick or daemon
    failed: int = 0  # gifts that failed; rolled back, retried by the next tick
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["program_id"] = str(self.program_id)
        data["local_date"] = self.local_date.isoformat() if self.local_date else None
        return data


@dataclass(frozen=True)
class BirthdaySummary:
    """One run over the programs; what `POST /api/notify/birthday-run` returns as JSON."""

    now: datetime
    programs: tuple[ProgramBirthdays, ...] = ()
    error: str | None = None  # the run itself failed (e.g. the database was unreachable)

    @property
    def gifted(self) -> int:
        return sum(p.gifted for p in self.programs)

    @property
    def failed(self) -> int:
        return sum(p.failed for p in self.programs)

    @property
    def failed_programs(self) -> int:
        return sum(1 for p in self.programs if p.error is not None)

    @property
    def ok(self) -> bool:
        return self.error is None and self.failed == 0 and self.failed_programs == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "ok": self.ok,
            "error": self.error,
            "gifted": self.gifted,
            "failed": self.failed,
            "failed_programs": self.failed_programs,
            "programs": [p.to_dict() for p in self.programs],
        }


@dataclass(frozen=True)
class _Plan:
    """A program's celebration today, decided before touching any pass."""

    program_id: uuid.UUID
    program_name: str | None
    today: date
    points: int
    template: Template | None  # None: points only, no message

    @property
    def year(self) -> int:
        return rules.gift_year(self.today)

    @property
    def has_gift(self) -> bool:
        return self.points > 0 or self.template is not None

    def message(self, member: BirthdayMember, balance: int) -> str | None:
        if self.template is None or not member.installed:
            return None
        values = {
            "first_name": member.first_name,
            "last_name": member.last_name,
            "program_name": self.program_name,
            "points": balance,
        }
        return rules.clip_message(self.template.render(values))


class _Refused(ValueError):
    """This program must not be celebrated by this run; the text says why."""


@dataclass
class _Counts:
    due: int = 0
    gifted: int = 0
    messaged: int = 0
    already_gifted: int = 0
    failed: int = 0


async def run_birthdays(
    pool: Pool,
    *,
    now: datetime,
    program_id: uuid.UUID | None = None,
    on_date: date | None = None,
    force: bool = False,
) -> BirthdaySummary:
    """Celebrate every enabled program's birthdays of its local date at `now` (UTC instant).

    `program_id` limits the run to one program (which must have the bot enabled).
    `on_date` celebrates that date instead of each program's local today; it is refused in a
    program whose local today differs unless `force` is set (a hand-run by an operator).
    """
    rows = await store.programs(pool, program_id)
    if program_id is not None and not rows:
        return BirthdaySummary(now=now, error=f"no program with id {program_id}")
    results = [await _run_program(pool, row, now, on_date, force) for row in rows]
    return BirthdaySummary(now=now, programs=tuple(results))


async def birthday_tick(pool: Pool, clock: Callable[[], datetime]) -> BirthdaySummary:
    """One scheduled run. Database trouble is logged and left to the next tick (each program
    and each gift already keeps its own trouble to itself); anything else is a bug and
    escapes, so the supervisor stops the daemon with a non-zero exit."""
    now = clock()
    try:
        summary = await run_birthdays(pool, now=now)
    except store.DatabaseError as exc:
        log.error("birthday_tick_failed", error=str(exc))
        return BirthdaySummary(now=now, error=str(exc))
    log.info(
        "birthday_tick_finished",
        programs=len(summary.programs),
        gifted=summary.gifted,
        failed=summary.failed,
        failed_programs=summary.failed_programs,
    )
    return summary


Tick = Callable[[], Awaitable[object]]


def schedule_birthdays(scheduler: BaseScheduler, tick: Tick, settings: Settings) -> None:
    """Add the birthday job: once at start-up, then every LOYALTYD_BIRTHDAY_INTERVAL_MINUTES.

    Every tick celebrates the whole of each program's local today, so the start-up tick (or
    any later one before local midnight) catches up a day the daemon partly missed, and the
    interval (at most an hour) bounds how late a greeting can be. Extra or overlapping ticks
    are harmless (the unique log row decides), but one at a time is enough: late ticks are
    coalesced into one run.
    """
    interval = settings.loyaltyd_birthday_interval_minutes
    scheduler.add_job(
        tick,
        IntervalTrigger(minutes=interval),
        id=JOB_ID,
        name="birthday bot",
        replace_existing=True,
        max_instances=1,
        coalesce=True,
        # A tick delayed (busy loop, suspended VM) by up to one interval is still worth running.
        misfire_grace_time=interval * 60,
        # APScheduler's own timeline is the wall clock, whatever `clock` the job reads.
        next_run_time=datetime.now(UTC),
    )


class BirthdayBot:
    """The birthday job on APScheduler, supervised like every other component: `run` returns
    once `stopping` is set and a tick in progress has finished (or `grace` ran out), and
    raises what a tick raised, so a crash ends the daemon instead of going silent."""

    def __init__(self, pool: Pool, settings: Settings, clock: Callable[[], datetime]) -> None:
        self._pool = pool
        self._settings = settings
        self._clock = clock
        self._running: set[asyncio.Task[Any]] = set()
        self._crash: BaseException | None = None
        self._crashed = asyncio.Event()

    async def run(self, stopping: asyncio.Event, grace: float) -> None:
        scheduler = AsyncIOScheduler(timezone=UTC)
        schedule_birthdays(scheduler, self._tick, self._settings)
        scheduler.start()
        try:
            await wait_any(stopping, self._crashed, within=None)
        finally:
            scheduler.shutdown(wait=False)
            await self._drain(grace)
        if self._crash is not None:
            raise self._crash

    async def _tick(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await birthday_tick(self._pool, self._clock)
        except Exception as exc:
            log.exception("birthday_bot_crashed")
            self._crash = exc
            self._crashed.set()
        finally:
            if task is not None:
                self._running.discard(task)

    async def _drain(self, grace: float) -> None:
        running = list(self._running)
        if not running:
            return
        log.info("birthday_bot_draining", ticks=len(running))
        _, late = await asyncio.wait(running, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)


async def _run_program(
    pool: Pool,
    program: BirthdayProgram,
    now: datetime,
    on_date: date | None,
    force: bool,
) -> ProgramBirthdays:
    with bound_contextvars(program_id=str(program.id)):
        try:
            plan = _plan(program, now, on_date, force)
        except (rules.UnknownTimezone, TemplateError, _Refused) as exc:
            log.error("birthday_program_failed", error=str(exc))
            return ProgramBirthdays(program.id, program.name, error=str(exc))
        try:
            counts = await _celebrate(pool, plan)
        except Exception as exc:  # one program's trouble must not stop the others
            log.exception("birthday_program_failed", error=str(exc))
            return _result(plan, _Counts(), error=str(exc))
        log.info(
            "birthday_program_done",
            local_date=plan.today.isoformat(),
            due=counts.due,
            gifted=counts.gifted,
            already_gifted=counts.already_gifted,
            failed=counts.failed,
        )
        return _result(plan, counts)


def _plan(program: BirthdayProgram, now: datetime, on_date: date | None, force: bool) -> _Plan:
    if not program.enabled:
        raise _Refused("the birthday bot is not enabled for this program")
    today = rules.local_date(now, rules.program_zone(program.timezone))
    if on_date is not None:
        refusal = None if force else rules.manual_date_refusal(on_date, today)
        if refusal is not None:
            raise _Refused(refusal)
        today = on_date
    text = program.message
    template = parse_template(text) if text and text.strip() else None
    return _Plan(
        program_id=program.id,
        program_name=program.name,
        today=today,
        points=program.reward_points,
        template=template,
    )


def _result(plan: _Plan, counts: _Counts, error: str | None = None) -> ProgramBirthdays:
    return ProgramBirthdays(
        program_id=plan.program_id,
        program_name=plan.program_name,
        local_date=plan.today,
        points=plan.points,
        due=counts.due,
        gifted=counts.gifted,
        messaged=counts.messaged,
        already_gifted=counts.already_gifted,
        failed=counts.failed,
        error=error,
    )


async def _celebrate(pool: Pool, plan: _Plan) -> _Counts:
    counts = _Counts()
    if not plan.has_gift:
        log.warning("birthday_program_has_nothing_to_give")
        return counts
    members = await store.passes_due(
        pool,
        program_id=plan.program_id,
        birthday_keys=rules.birthday_keys(plan.today),
        year=plan.year,
        points_only=plan.points > 0,
    )
    counts.due = len(members)
    for member in members:
        outcome = await _gift_safely(pool, plan, member)
        _count(counts, outcome)
    return counts


def _count(counts: _Counts, outcome: str) -> None:
    if outcome == "already_gifted":
        counts.already_gifted += 1
    elif outcome == "failed":
        counts.failed += 1
    else:
        counts.gifted += 1
        if outcome == "messaged":
            counts.messaged += 1


async def _gift_safely(pool: Pool, plan: _Plan, member: BirthdayMember) -> str:
    """'gifted', 'messaged', 'already_gifted' or 'failed'; a refused gift is rolled back and
    left for the next tick, it never stops the rest of the program."""
    with bound_contextvars(pass_id=str(member.pass_id)):
        try:
            return await _gift(pool, plan, member)
        except store.DatabaseError as exc:
            log.error("birthday_gift_failed", error=str(exc))
            return "failed"


async def _gift(pool: Pool, plan: _Plan, member: BirthdayMember) -> str:
    gifted = await store.gift(
        pool,
        pass_id=member.pass_id,
        program_id=plan.program_id,
        year=plan.year,
        local_date=plan.today,
        points=plan.points,
        message_for=lambda balance: plan.message(member, balance),
    )
    if gifted is None:
        return "already_gifted"
    message = gifted.message
    log.info(
        "birthday_gifted",
        points=plan.points,
        new_balance=gifted.new_balance,
        with_message=message is not None,
        replayed=gifted.replayed,
    )
    return "messaged" if message is not None else "gifted"
