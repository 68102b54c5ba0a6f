"""`loyaltyd demo`: the whole product in under a minute, with nothing installed but Python.

An embedded Postgres in a temporary directory, a fake PassKit with realistic latency (and a
few 503s), sample programs and members, and the real daemon in this process. It shows a
transaction syncing, a coupon redeemed, a campaign blasting with a live progress bar, and a
birthday run, then prints a summary. Everything it reports is read back from the database and
from the fake's records, not assumed.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TextIO

import asyncpg
from pydantic import SecretStr

from daemon.app import Daemon, run_daemon
from daemon.birthday.bot import run_birthdays
from daemon.cli.progress import ProgressLine
from daemon.core.config import Settings
from daemon.passkit.suffix import visible_text
from daemon.store.embedded import DATABASE_NAME, EmbeddedPostgres
from daemon.store.migrate import migrate
from daemon.store.pool import DatabaseTarget, ensure_database, session
from daemon.store.status import campaign_retry_waits
from daemon.testing.fakepasskit import FakePassKit, Faults, LatencyModel, issued_ids

DEMO_KEY = "demo-api-key"
DEMO_SECRET = "demo-api-secret-not-a-real-one-0123456789"  # noqa: S105 - the fake's own
FIRST_NAMES = ("Ada", "Bo", "Chen", "Dara", "Eli", "Fatou", "Gus", None, "Ines", "Jun")


@dataclass
class DemoOptions:
    members: int = 3000
    concurrency: int = 50
    median_ms: float = 50.0
    p503: float = 0.02
    database_url: str | None = None
    out: TextIO = sys.stdout


class Screen:
    """Prints steps; the progress bar redraws in place on a terminal and prints a line per
    quarter elsewhere (CI logs)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._line = ProgressLine(out)
        self._aside: str | None = None

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def progress(self, done: int, total: int, suffix: str, aside: str | None = None) -> None:
        """`aside` (work waiting on retries) rides on the bar on a terminal; elsewhere it is
        printed once each time such a wait begins."""
        if self.out.isatty():
            self._line.show(done, total, suffix + (f" · {aside}" if aside else ""))
        else:
            self._line.show(done, total, suffix)
            if aside and not self._aside:
                self.say(f"    … {aside}")
        self._aside = aside

    def end_progress(self) -> None:
        self._line.finish()


async def _start_database(options: DemoOptions, workdir: Path) -> DatabaseTarget:
    if options.database_url is not None:
        return DatabaseTarget(options.database_url)
    embedded = EmbeddedPostgres(workdir / "db", remove_on_stop=True)
    admin = embedded.start()
    await ensure_database(admin, DATABASE_NAME)
    return DatabaseTarget(embedded.dsn(DATABASE_NAME), "the embedded Postgres", embedded)


async def _seed(conn: asyncpg.Connection, members: int, rng: random.Random) -> dict[str, Any]:
    """Two programs; members with balances and zips; a tenth born today (bot still off)."""
    today = datetime.now(UTC).date()
    pizza = await conn.fetchval(
        "INSERT INTO programs (name, timezone, passkit_program_id, passkit_tier_id, "
        "birthday_reward_points, birthday_message) VALUES ('Joe''s Pizza', 'UTC', 'pk-prog-1', "
        "'pk-tier-1', 50, 'Happy birthday {first_name|friend}! 50 points are on us: you now "
        "have {points}.') RETURNING id"
    )
    await conn.execute("INSERT INTO programs (name, timezone) VALUES ('City Fair', 'Europe/Paris')")
    users = [_member(i, today, rng) for i in range(members)]
    await conn.copy_records_to_table(
        "users", records=users, columns=["id", "email", "first_name", "birth_date", "zip"]
    )
    passes = [(uuid.uuid4(), pizza, u[0], f"pk-{i:06d}", f"M{i:06d}") for i, u in enumerate(users)]
    await conn.copy_records_to_table(
        "passes_master",
        records=[(*p, "MEMBERSHIP", "INSTALLED") for p in passes],
        columns=[
            "id",
            "program_id",
            "user_id",
            "passkit_internal_id",
            "external_id",
            "protocol",
            "status",
        ],
    )
    await conn.copy_records_to_table(
        "protocol_membership",
        records=[(p[0], rng.randrange(0, 1500), rng.randrange(0, 3000)) for p in passes],
        columns=["pass_id", "points_balance", "tier_points"],
    )
    coupon = await conn.fetchval(
        "INSERT INTO passes_master (program_id, user_id, passkit_internal_id, external_id, "
        "protocol, status) VALUES ($1, $2, 'pk-coupon-1', 'C000001', 'COUPON', 'INSTALLED') "
        "RETURNING id",
        pizza,
        users[0][0],
    )
    return {
        "program": pizza,
        "member": passes[1][0],
        "member_pk": passes[1][3],
        "coupon": coupon,
        "today": today,
    }


def _member(i: int, today: date, rng: random.Random) -> tuple[Any, ...]:
    born_today = i % 10 == 3
    birth = (
        date(1980 + i % 30, today.month, min(today.day, 28))
        if born_today
        else date(1970 + i % 40, 1 + i % 12, 1 + i % 28)
    )
    zip_code = rng.choice(("90210", "10001", "75001"))
    return (
        uuid.uuid4(),
        f"member{i}@example.com",
        FIRST_NAMES[i % len(FIRST_NAMES)],
        birth,
        zip_code,
    )


def _settings(options: DemoOptions, dsn: str, fake_url: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=SecretStr(dsn),
        passkit_api_key=SecretStr(DEMO_KEY),
        passkit_api_secret=SecretStr(DEMO_SECRET),
        passkit_base_url=fake_url,
        passkit_max_concurrency=options.concurrency,
        passkit_rate_limit=0,
        loyaltyd_poll_interval_seconds=1,
        loyaltyd_birthday_interval_minutes=60,
        # The demo's passes are written straight into the database, not issued at the fake
        # PassKit: a sweep would find none of them in its lists (and say so).
        loyaltyd_wallet_sweeps=False,
        loyaltyd_log_level="WARNING",
    )


async def _until(check: Callable[[], Awaitable[bool]], limit: float) -> float:
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > limit:
            raise TimeoutError("the demo step did not finish in time")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def _yes(value: bool) -> bool:
    return value


async def step_transaction(
    screen: Screen, pool: asyncpg.Pool, fake: FakePassKit, seed: dict[str, Any]
) -> float:
    screen.say("1. A customer buys a pizza: +25 points, with a thank-you message")
    pk = seed["member_pk"]
    before = len(fake.messages_for(pk))
    result = await pool.fetchval(
        "SELECT process_membership_transaction($1, 25, 'EARN', 'Thanks for your visit! +25 "
        "points', 'demo-order-1')",
        seed["member"],
    )
    balance = int(str(result).split('"new_balance": ')[1].split(",")[0])
    took = await _until(
        lambda: _yes(len(fake.messages_for(pk)) > before and fake.points_of(pk) == balance), 10
    )
    message = visible_text(fake.messages_for(pk)[-1])
    screen.say(
        f"   PassKit now shows {balance} points and the lock-screen message "
        f'"{message}" ({took * 1000:.0f} ms after the insert)'
    )
    return took


async def step_coupon(
    screen: Screen, pool: asyncpg.Pool, fake: FakePassKit, seed: dict[str, Any]
) -> float:
    screen.say("2. A coupon is redeemed at the till (one row: pass_id + kind REDEEM)")
    await pool.execute(
        "INSERT INTO transactions (pass_id, kind) VALUES ($1, 'REDEEM')", seed["coupon"]
    )
    took = await _until(lambda: _yes(fake.redeemed("pk-coupon-1")), 10)
    screen.say(f"   PassKit marked the coupon redeemed ({took * 1000:.0f} ms)")
    return took


async def step_campaign(screen: Screen, pool: asyncpg.Pool, seed: dict[str, Any]) -> dict[str, Any]:
    screen.say("3. An admin inserts a push campaign for everyone (segment ALL)")
    campaign = await pool.fetchval(
        "INSERT INTO push_campaigns (program_id, name, message_text, segment) VALUES ($1, "
        "'Weekend double points', 'Hi {first_name|friend}, double points all weekend at "
        "{program_name}!', 'ALL') RETURNING id",
        seed["program"],
    )
    started = time.monotonic()
    row: Any = None
    while True:
        row = await pool.fetchrow(
            "SELECT status, recipient_count, sent_count, failed_count, skipped_count, error "
            "FROM push_campaign_progress WHERE id = $1",
            campaign,
        )
        done = row["sent_count"] + row["failed_count"] + row["skipped_count"]
        elapsed = time.monotonic() - started
        rate = row["sent_count"] / elapsed if elapsed else 0.0
        waits = await campaign_retry_waits(pool, [campaign])
        screen.progress(
            done,
            row["recipient_count"] or 1,
            f"{row['sent_count']:,}/{row['recipient_count']:,} sent, "
            f"{row['failed_count']} failed, {rate:,.0f}/s  {row['status']}",
            waits[campaign].describe() if campaign in waits else None,
        )
        if row["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
            break
        if elapsed > 60:
            raise TimeoutError("the campaign did not finish within a minute")
        await asyncio.sleep(0.1)
    screen.end_progress()
    if row["status"] != "COMPLETED":
        raise RuntimeError(f"campaign ended {row['status']}: {row['error']}")
    took = time.monotonic() - started
    screen.say(
        f"   COMPLETED: {row['sent_count']:,} phones buzzed in {took:.1f} s "
        f"({row['sent_count'] / took:,.0f}/s); audit row written to notification_logs"
    )
    return {
        "sent": row["sent_count"],
        "failed": row["failed_count"],
        "skipped": row["skipped_count"],
        "seconds": took,
    }


async def step_birthdays(
    screen: Screen, pool: asyncpg.Pool, fake: FakePassKit, seed: dict[str, Any]
) -> int:
    screen.say("4. The admin enables the birthday bot; a birthday run (as the daily job does)")
    await pool.execute(
        "UPDATE programs SET birthday_bot_enabled = true WHERE id = $1", seed["program"]
    )
    summary = await run_birthdays(pool, now=datetime.now(UTC), program_id=seed["program"])
    gifted = summary.gifted
    owed = await pool.fetch(
        "SELECT p.passkit_internal_id FROM birthday_logs b JOIN passes_master p ON p.id = b.pass_id"
    )
    took = await _until(
        lambda: _yes(
            all(any("Happy birthday" in m for m in fake.messages_for(r[0])) for r in owed)
        ),
        30,
    )
    again = await run_birthdays(pool, now=datetime.now(UTC), program_id=seed["program"])
    screen.say(
        f"   {gifted} members born today got 50 points and a birthday message "
        f"(on their passes {took:.1f} s later); a second run gifted {again.gifted}"
    )
    return gifted


async def run_demo(options: DemoOptions) -> int:
    screen = Screen(options.out)
    workdir = Path(tempfile.mkdtemp(prefix="loyaltyd-demo-"))
    began = time.monotonic()
    screen.say(
        "loyaltyd demo: embedded Postgres + fake PassKit "
        f"({options.median_ms:.0f} ms median latency, {options.p503:.0%} 503s)"
    )
    target = await _start_database(options, workdir)
    try:
        async with session(target) as conn:
            await migrate(conn)
            seed = await _seed(conn, options.members, random.Random(1))
        screen.say(f"   seeded 2 programs and {options.members:,} members with installed passes")
        return await _run_steps(screen, options, target.dsn, seed, began)
    finally:
        target.close()
        shutil.rmtree(workdir, ignore_errors=True)


async def _run_steps(
    screen: Screen, options: DemoOptions, dsn: str, seed: dict[str, Any], began: float
) -> int:
    latency = LatencyModel(median_ms=options.median_ms, p99_ms=options.median_ms * 5)
    async with FakePassKit(
        DEMO_KEY,
        DEMO_SECRET,
        issued=issued_ids("pk"),
        latency=latency,
        faults=Faults(p503=options.p503),
        record_bodies=False,
    ) as fake:
        settings = _settings(options, dsn, fake.url)
        stopping = asyncio.Event()
        started: list[Daemon] = []
        daemon = asyncio.create_task(
            run_daemon(settings, dsn, stopping=stopping, on_start=started.append)
        )
        await _until(
            lambda: _yes(
                bool(started) and started[0].listener is not None and started[0].listener.alive
            ),
            30,
        )
        pool = started[0].pool
        try:
            await step_transaction(screen, pool, fake, seed)
            await step_coupon(screen, pool, fake, seed)
            blast = await step_campaign(screen, pool, seed)
            gifted = await step_birthdays(screen, pool, fake, seed)
        finally:
            stopping.set()
            await daemon
        _summary(screen, fake, blast, gifted, time.monotonic() - began)
    return 0


def _summary(
    screen: Screen, fake: FakePassKit, blast: dict[str, Any], gifted: int, elapsed: float
) -> None:
    statuses: dict[int, int] = {}
    for r in fake.requests:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    screen.say()
    screen.say("Summary")
    screen.say(
        f"  PassKit requests        {len(fake.requests):>8,}  "
        f"(200: {statuses.get(200, 0):,}, 503: {statuses.get(503, 0):,})"
    )
    screen.say(
        f"  retries                 {statuses.get(503, 0):>8,}  each 503 (PassKit busy) was "
        "tried again: once within a second, then after a growing back-off; none lost, none "
        "sent twice"
    )
    screen.say(
        f"  campaign                {blast['sent']:>8,} sent, {blast['failed']} failed, "
        f"{blast['skipped']} skipped in {blast['seconds']:.1f} s"
    )
    screen.say(f"  birthday gifts          {gifted:>8,}")
    screen.say(f"  mean PassKit latency    {fake.mean_latency() * 1000:>8.1f} ms")
    screen.say(f"  demo finished in        {elapsed:>8.1f} s")
