"""The delivery store statement by statement: claim (with the frequency cap and late opt-outs),
record (lease holder only, counters in step, retry delays on the database's clock), extend,
release; and the delivery handler's skip."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from daemon.campaigns.delivery import DeliveryHandler, TemplateCache
from daemon.core.config import Settings
from daemon.engine.outcomes import Failed, RetryLater, Skipped, Succeeded
from daemon.passkit.client import PassKitClient
from daemon.store.deliveries import DeliveryStore
from daemon.store.queries import q
from tests.campaign_support import bulk_audience, campaign, insert_campaign, plan
from tests.factories import make_pass, make_program, make_user


@pytest.fixture
def queue(pool: asyncpg.Pool, make_settings: Callable[..., Settings]) -> DeliveryStore:
    return DeliveryStore(pool, lease_seconds=make_settings().loyaltyd_lease_seconds)


@pytest.fixture
async def handler(make_settings: Callable[..., Settings]) -> AsyncIterator[DeliveryHandler]:
    async with PassKitClient(make_settings()) as client:  # mock mode: nothing leaves the machine
        yield DeliveryHandler(client)


async def _started(pool: asyncpg.Pool, settings: Settings, **cols: object) -> uuid.UUID:
    campaign_id = await insert_campaign(pool, **cols)
    await plan(pool, settings)
    assert (await campaign(pool, campaign_id))["status"] == "PROCESSING"
    return campaign_id


async def _delivery(
    pool: asyncpg.Pool, campaign_id: uuid.UUID, pass_id: uuid.UUID
) -> asyncpg.Record:
    row: asyncpg.Record = await pool.fetchrow(
        "SELECT * FROM loyaltyd.campaign_deliveries WHERE campaign_id = $1 AND pass_id = $2",
        campaign_id,
        pass_id,
    )
    return row


async def test_claim_carries_what_the_message_needs(
    pool: asyncpg.Pool, queue: DeliveryStore, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool, name="Joe's", passkit_program_id="prog", passkit_tier_id="t")
    user = await make_user(pool, first_name="Ada", last_name="Lovelace")
    pass_id = await make_pass(pool, program, user_id=user, points=12, passkit_internal_id="pk-1")
    campaign_id = await _started(
        pool,
        make_settings(),
        program_id=program,
        message_text="{first_name} {last_name}: {points} at {program_name}",
    )
    owner = uuid.uuid4()
    [job] = await queue.claim(owner, 10)
    assert (job.campaign_id, job.pass_id, job.attempts, job.lease_expired) == (
        campaign_id,
        pass_id,
        1,
        False,
    )
    assert (job.protocol, job.passkit_id) == ("MEMBERSHIP", "pk-1")
    assert TemplateCache().render(job) == "Ada Lovelace: 12 at Joe's"
    row = await _delivery(pool, campaign_id, pass_id)
    assert (row["state"], row["lease_owner"]) == ("claimed", owner)
    assert await queue.claim(uuid.uuid4(), 10) == [], "a leased row is nobody else's"


async def test_recipients_who_left_the_audience_since_the_start_are_skipped_at_claim(
    pool: asyncpg.Pool, queue: DeliveryStore, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    stays, opts_out, deactivated, uninstalled, archived = [
        await make_pass(pool, program) for _ in range(5)
    ]
    campaign_id = await _started(pool, make_settings(), program_id=program)
    await pool.execute(
        "UPDATE users SET marketing_opt_in = false "
        "WHERE id = (SELECT user_id FROM passes_master WHERE id = $1)",
        opts_out,
    )
    await pool.execute("UPDATE passes_master SET is_active = false WHERE id = $1", deactivated)
    await pool.execute("UPDATE passes_master SET status = 'UNINSTALLED' WHERE id = $1", uninstalled)
    await pool.execute("UPDATE passes_master SET status = 'ARCHIVED' WHERE id = $1", archived)
    jobs = await queue.claim(uuid.uuid4(), 10)
    assert [j.pass_id for j in jobs] == [stays]
    reasons = {
        p: (await _delivery(pool, campaign_id, p))["error"]
        for p in (opts_out, deactivated, uninstalled, archived)
    }
    assert reasons == {
        opts_out: "member opted out of marketing",
        deactivated: "pass no longer active",
        uninstalled: "pass uninstalled from the wallet",
        archived: "pass no longer installed",
    }
    assert (await campaign(pool, campaign_id))["skipped_count"] == 4


async def test_two_running_campaigns_never_push_one_pass_past_the_cap(
    pool: asyncpg.Pool, queue: DeliveryStore, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool, max_pushes_per_pass_per_day=1)
    pass_id = await make_pass(pool, program)
    settings = make_settings()
    first = await _started(pool, settings, program_id=program)
    second = await _started(pool, settings, program_id=program)
    owner = uuid.uuid4()
    jobs = await queue.claim(owner, 10)
    assert len(jobs) == 1, "one message per pass per claim"
    # While the first message is in flight, the other campaign's row is capped.
    assert await queue.claim(owner, 10) == []
    other = second if jobs[0].campaign_id == first else first
    row = await _delivery(pool, other, pass_id)
    assert (row["state"], row["error"]) == (
        "skipped",
        "frequency cap: 1 campaign messages in the last 24 h (limit 1)",
    )
    await queue.record(owner, [(jobs[0], Succeeded())])
    assert (await _delivery(pool, jobs[0].campaign_id, pass_id))["state"] == "sent"


async def test_a_claim_waits_for_another_daemons_claim_and_sees_its_cap(
    pool: asyncpg.Pool,
    queue: DeliveryStore,
    make_settings: Callable[..., Settings],
    database_url: str,
) -> None:
    """Another daemon's claim still open (not committed) when ours starts: ours waits for it
    and then counts its recipient against the cap, instead of claiming the same pass for the
    other campaign from a snapshot that cannot see it."""
    program = await make_program(pool, max_pushes_per_pass_per_day=1)
    pass_id = await make_pass(pool, program)
    settings = make_settings()
    first = await _started(pool, settings, program_id=program)
    second = await _started(pool, settings, program_id=program)
    other_daemon = await asyncpg.connect(database_url)
    try:
        tx = other_daemon.transaction()
        await tx.start()
        await other_daemon.execute(q("serialise_delivery_claims"))
        theirs = await other_daemon.fetch(q("claim_deliveries"), uuid.uuid4(), 1, 60.0, 5.0, False)
        assert [r["state"] for r in theirs] == ["claimed"]
        ours = asyncio.create_task(queue.claim(uuid.uuid4(), 10))
        await asyncio.sleep(0.3)
        assert not ours.done(), "our claim waits for theirs"
        await tx.commit()
        assert await asyncio.wait_for(ours, 5) == []
    finally:
        await other_daemon.close()
    other = second if theirs[0]["campaign_id"] == first else first
    row = await _delivery(pool, other, pass_id)
    assert (row["state"], row["error"]) == (
        "skipped",
        "frequency cap: 1 campaign messages in the last 24 h (limit 1)",
    )


async def test_only_the_lease_holder_records_and_counters_follow_the_rows(
    pool: asyncpg.Pool, queue: DeliveryStore, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    for _ in range(4):
        await make_pass(pool, program)
    campaign_id = await _started(pool, make_settings(), program_id=program)
    owner = uuid.uuid4()
    a, b, c, d = await queue.claim(owner, 10)
    await queue.record(uuid.uuid4(), [(a, Succeeded())])  # not the holder: ignored
    assert (await _delivery(pool, a.campaign_id, a.pass_id))["state"] == "claimed"
    await queue.record(
        owner,
        [
            (a, Succeeded()),
            (b, Failed("boom")),
            (c, Skipped("not issued")),
            (d, RetryLater(300.0, "503")),
        ],
    )
    row = await campaign(pool, campaign_id)
    assert (row["sent_count"], row["failed_count"], row["skipped_count"]) == (1, 1, 1)
    states = {
        r["pass_id"]: (r["state"], r["error"], r["finished_by"])
        for r in await pool.fetch(
            "SELECT * FROM loyaltyd.campaign_deliveries WHERE campaign_id = $1", campaign_id
        )
    }
    assert states == {
        a.pass_id: ("sent", None, owner),
        b.pass_id: ("failed", "boom", owner),
        c.pass_id: ("skipped", "not issued", owner),
        d.pass_id: ("pending", "503", None),
    }
    retried = await _delivery(pool, campaign_id, d.pass_id)
    seconds_ahead = await pool.fetchval(
        "SELECT extract(epoch FROM $1 - now())", retried["available_at"]
    )
    assert 299 <= float(seconds_ahead) <= 300, "due 300 s later, on the database's clock"
    assert await queue.claim(owner, 10) == [], "not due before its retry time"
    await queue.record(owner, [(a, Failed("late duplicate"))])
    assert (await campaign(pool, campaign_id))["failed_count"] == 1, "a final row stays final"


async def test_released_rows_are_due_at_once_and_their_attempt_not_counted(
    pool: asyncpg.Pool, queue: DeliveryStore, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    await make_pass(pool, program)
    await _started(pool, make_settings(), program_id=program)
    owner = uuid.uuid4()
    jobs = await queue.claim(owner, 10)
    await queue.release(owner, jobs)
    [again] = await queue.claim(uuid.uuid4(), 10)
    assert again.attempts == 1


async def test_extended_leases_outlive_the_original_one(
    pool: asyncpg.Pool, queue: DeliveryStore, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    await make_pass(pool, program)
    campaign_id = await _started(pool, make_settings(), program_id=program)
    owner = uuid.uuid4()
    [job] = await queue.claim(owner, 10)
    await pool.execute(
        "UPDATE loyaltyd.campaign_deliveries SET available_at = now() - interval '1 s'"
    )
    await queue.extend(owner, [job])
    assert await queue.claim(uuid.uuid4(), 10) == []
    row = await _delivery(pool, campaign_id, job.pass_id)
    assert row["available_at"] > datetime.now(UTC) + timedelta(seconds=30)


async def test_an_expired_lease_is_taken_over_by_another_daemon(
    pool: asyncpg.Pool, queue: DeliveryStore, make_settings: Callable[..., Settings]
) -> None:
    program = await make_program(pool)
    await make_pass(pool, program)
    await _started(pool, make_settings(), program_id=program)
    dead, alive = uuid.uuid4(), uuid.uuid4()
    [job] = await queue.claim(dead, 10)
    await pool.execute(
        "UPDATE loyaltyd.campaign_deliveries SET available_at = now() - interval '1 s'"
    )
    [taken] = await queue.claim(alive, 10)
    assert (taken.pass_id, taken.lease_expired, taken.attempts) == (job.pass_id, True, 2)
    await queue.record(dead, [(job, Succeeded())])
    await queue.record(alive, [(taken, Succeeded())])
    assert (await campaign(pool, job.campaign_id))["sent_count"] == 1


async def test_a_pass_not_issued_in_passkit_is_skipped_with_the_reason(
    pool: asyncpg.Pool,
    queue: DeliveryStore,
    handler: DeliveryHandler,
    make_settings: Callable[..., Settings],
) -> None:
    program = await make_program(pool)
    await make_pass(pool, program, passkit_internal_id=None)
    await _started(pool, make_settings(), program_id=program)
    [job] = await queue.claim(uuid.uuid4(), 10)
    assert await handler.handle(job) == Skipped(
        "pass has no passkit_internal_id (not issued in PassKit)"
    )


def test_templates_are_parsed_once_per_campaign_text() -> None:
    cache = TemplateCache(size=2)
    campaign_id = uuid.uuid4()
    first = cache.get(campaign_id, "Hi {first_name}")
    assert cache.get(campaign_id, "Hi {first_name}") is first
    assert cache.get(campaign_id, "Bye {first_name}") is not first
    for _ in range(3):
        cache.get(uuid.uuid4(), "x")
    assert cache.get(campaign_id, "Bye {first_name}").text == "Bye {first_name}"


async def test_claims_take_turns_across_programs_then_across_their_campaigns(
    pool: asyncpg.Pool, queue: DeliveryStore, make_settings: Callable[..., Settings]
) -> None:
    """Round robin: program A (two campaigns), B and C, 60 due recipients each. A claim of 30
    takes 10 of each program, A's split 5 and 5; a program with less work leaves its share."""
    settings = make_settings()
    a = await make_program(pool, name="A")
    b = await make_program(pool, name="B")
    c = await make_program(pool, name="C")
    async with pool.acquire() as conn:
        for program, prefix in ((a, "a1"), (a, "a2"), (b, "b"), (c, "c")):
            await bulk_audience(conn, program, 60, prefix=prefix)
    # A's two campaigns go to different members (a pass gets one message per claim).
    a1, a2 = [
        await _started(
            pool,
            settings,
            program_id=a,
            message_text=f"A {prefix}",
            segment="CSV",
            member_ids=[f"M-{prefix}-{n}" for n in range(1, 61)],
        )
        for prefix in ("a1", "a2")
    ]
    b1 = await _started(pool, settings, program_id=b, message_text="B")
    c1 = await _started(pool, settings, program_id=c, message_text="C")
    await pool.execute(  # C has only 4 recipients still due; the rest were sent already
        "UPDATE loyaltyd.campaign_deliveries SET state = 'sent', finished_at = now()"
        " WHERE campaign_id = $1 AND pass_id NOT IN (SELECT pass_id FROM"
        " loyaltyd.campaign_deliveries WHERE campaign_id = $1 ORDER BY pass_id LIMIT 4)",
        c1,
    )
    jobs = await queue.claim(uuid.uuid4(), 30)
    per_campaign = Counter(job.campaign_id for job in jobs)
    assert len(jobs) == 30
    assert per_campaign[c1] == 4, "C has only four to send"
    assert per_campaign[b1] in (13, 14), per_campaign  # B and A share what C leaves
    assert abs(per_campaign[a1] - per_campaign[a2]) <= 1, per_campaign
    assert per_campaign[a1] + per_campaign[a2] in (12, 13), per_campaign
