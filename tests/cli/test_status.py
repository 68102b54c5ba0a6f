"""`loyaltyd status` on a seeded database: campaigns with progress bars (unfinished first),
queue depths with ages, dead syncs with their errors, today's birthday gifts; and --json."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest
from structlog.testing import capture_logs

from daemon.birthday.bot import run_birthdays
from daemon.cli.commands import status
from daemon.cli.commands.status import age, campaign_line
from daemon.cli.main import build_parser
from daemon.cli.progress import progress_bar
from daemon.core.config import Settings
from daemon.store.status import CampaignProgress
from tests.campaign_support import stage_campaign
from tests.factories import make_pass, make_program

EARN = "SELECT process_membership_transaction($1, $2, 'EARN', NULL, NULL)"


@pytest.mark.parametrize(
    ("percent", "bar"),
    [
        (0, "[..........]"),
        (9.9, "[..........]"),
        (10, "[#.........]"),
        (52, "[#####.....]"),
        (99.9, "[#########.]"),
        (100, "[##########]"),
        (130, "[##########]"),
    ],
)
def test_progress_bar(percent: float, bar: str) -> None:
    assert progress_bar(percent) == bar


def _progress(**fields: object) -> CampaignProgress:
    values: dict[str, object] = {
        "id": uuid.UUID(int=1),
        "name": "Summer",
        "program_name": "Joe's Pizza",
        "status": "PROCESSING",
        "recipients": 10_000,
        "sent": 5_100,
        "failed": 20,
        "skipped": 80,
        "percent": 52.0,
        "error": None,
        "created_at": datetime(2024, 6, 1, tzinfo=UTC),
    }
    values.update(fields)
    return CampaignProgress(**values)  # type: ignore[arg-type]


def test_campaign_line_reads_like_the_spec() -> None:
    assert campaign_line(_progress()) == (
        "[#####.....] 52% 5,200/10,000 sent 5,100 failed 20 skipped 80 — PROCESSING"
    )


def test_campaign_line_shows_why_a_campaign_failed() -> None:
    line = campaign_line(
        _progress(
            status="FAILED", recipients=0, sent=0, failed=0, skipped=0, percent=0.0, error="x" * 300
        )
    )
    assert line.startswith("[..........] 0% 0/0 sent 0 failed 0 skipped 0 — FAILED: xxx")
    assert line.endswith("…") and len(line) < 200


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (59.9, "59s"),
        (65, "1m 05s"),
        (3600, "1h 00m"),
        (7_380, "2h 03m"),
        (3 * 86400 + 4 * 3600, "3d 4h"),
    ],
)
def test_age(seconds: float, text: str) -> None:
    assert age(seconds) == text


def test_status_is_a_registered_command() -> None:
    args = build_parser().parse_args(["status", "--json", "--campaigns", "3"])
    assert (args._module, args.json, args.campaigns, args.dead) == (status, True, 3, 5)


async def _seed(pool: asyncpg.Pool) -> dict[str, uuid.UUID]:
    """A running, a finished and a failed campaign; two pending syncs and a dead one; a
    birthday gifted today in a program with the bot on."""
    today = datetime.now(UTC).date()
    program = await make_program(
        pool,
        name="Joe's Pizza",
        timezone="UTC",
        birthday_bot_enabled=True,
        birthday_reward_points=50,
        birthday_message="Happy birthday!",
    )
    await make_program(pool, name="Quiet Bar")  # bot off, no gifts: not listed
    now = datetime.now(UTC)
    running = await stage_campaign(
        pool,
        program_id=program,
        name="Summer",
        status="PROCESSING",
        recipient_count=10_000,
        sent_count=5_100,
        failed_count=20,
        skipped_count=80,
        started_at=now - timedelta(minutes=5),
        created_at=now - timedelta(days=2),
    )
    done = await stage_campaign(
        pool,
        program_id=program,
        name="Spring",
        status="COMPLETED",
        recipient_count=3,
        sent_count=3,
        failed_count=0,
        skipped_count=0,
        started_at=now - timedelta(hours=2),
        finished_at=now - timedelta(hours=1),
        created_at=now - timedelta(hours=2),
    )
    failed = await stage_campaign(
        pool, program_id=program, name="Oops", status="FAILED", error="unknown segment 'X'"
    )
    birthday = await make_pass(
        pool, program, points=1, birth_date=date(2000, today.month, today.day)
    )
    await run_birthdays(pool, now=datetime.now(UTC))
    members = [await make_pass(pool, program, points=10) for _ in range(2)]
    for pass_id in members:
        await pool.execute(EARN, pass_id, 5)
    await pool.execute(  # one of them failed transiently and waits for its next try
        "UPDATE loyaltyd.pass_syncs SET attempts = 3, available_at = now() + interval '2 min',"
        " last_error = 'PassKit set_points answered 503: unavailable' WHERE pass_id = $1",
        members[0],
    )
    dead = await make_pass(pool, program, points=10, external_id="M-DEAD-1")
    await pool.execute(EARN, dead, 5)
    await pool.execute(
        "UPDATE loyaltyd.pass_syncs SET state = 'dead', attempts = 5, "
        "last_error = 'PassKit set_points answered 404: member not found' WHERE pass_id = $1",
        dead,
    )
    await pool.execute(
        "INSERT INTO loyaltyd.instances (id, host, pid, heartbeat_at, rate_limit, share,"
        " sent_per_second, taken_over, ready_at) VALUES"
        " ('00000000-0000-0000-0000-00000000000a', 'web1', 101, now(), 150, 75, 74.6, 12,"
        "  now()),"
        " ('00000000-0000-0000-0000-00000000000b', 'web2', 202, now() - interval '1 min',"
        "  150, 75, 75, 0, now() - interval '1 hour')"
    )
    return {
        "program": program,
        "running": running,
        "done": done,
        "failed": failed,
        "birthday": birthday,
    }


async def _status(settings: Settings, *argv: str) -> int:
    """Run the command; its logs are captured, so stdout holds only the report (as it does
    outside tests, where logs go to stderr)."""
    with capture_logs():
        return await status.run(settings, build_parser().parse_args(["status", *argv]))


async def test_status_prints_campaigns_queues_dead_syncs_and_birthdays(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    seeded = await _seed(pool)
    assert await _status(make_settings()) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    summer = lines.index(f"  Summer · Joe's Pizza · {seeded['running']}")
    assert lines[summer + 1] == (
        "    [#####.....] 52% 5,200/10,000 sent 5,100 failed 20 skipped 80 — PROCESSING"
    )
    spring = lines.index(f"  Spring · Joe's Pizza · {seeded['done']}")
    assert lines[spring + 1] == "    [##########] 100% 3/3 sent 3 failed 0 skipped 0 — COMPLETED"
    assert summer < spring, "unfinished campaigns come first"
    assert "— FAILED: unknown segment 'X'" in out
    # 3 syncs owed: 2 earns and the birthday gift; nothing claimed (no daemon runs)
    [syncs] = [line for line in lines if line.startswith("  Pass syncs") and "pending" in line]
    assert syncs.split()[2:5] == ["pending", "3", "(oldest"]
    assert "claimed 0" in syncs
    assert "  Campaign sends pending 0  claimed 0" in lines
    assert "Daemons: 1 live of 2 known" in lines
    assert any(
        line.startswith(
            "  00000000 web1 pid 101: heartbeat 0s ago (live), budget share 75/150 per s,"
            " sent 75/s, took over 12 rows"
        )
        for line in lines
    )
    assert (
        "  00000000 web2 pid 202: heartbeat 1m 00s ago (dead, its work taken over), budget share"
        " 75/150 per s, sent 75/s, took over 0 rows"
    ) in lines
    work = lines.index("Work by program (rows owed to PassKit, oldest):")
    assert lines[work + 1].startswith("  Joe's Pizza: Pass syncs 3 (oldest ")
    assert "PassKit retries: work waiting after transient failures" in out
    [retrying] = [line for line in lines if line.startswith("  Pass syncs") and "waiting" in line]
    assert retrying.startswith("  Pass syncs     1 waiting, next try in 1m 5")
    assert retrying.endswith(": PassKit set_points answered 503: unavailable")
    assert "Dead pass syncs: 1 (newest 1 below;" in out
    [dead] = [line for line in lines if "M-DEAD-1" in line]
    assert dead.endswith(
        "member M-DEAD-1 (Joe's Pizza), 5 attempt(s): PassKit set_points answered 404: "
        "member not found"
    )
    today = datetime.now(UTC).date()
    assert f"  Joe's Pizza (UTC, {today}): 1 gifted, 1 with the message" in lines
    assert "Quiet Bar" not in out


async def test_status_json_is_machine_readable(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    seeded = await _seed(pool)
    capsys.readouterr()  # the seeding's own logs
    assert await _status(make_settings(), "--json", "--campaigns", "2") == 0
    report = json.loads(capsys.readouterr().out)
    assert [c["id"] for c in report["campaigns"]] == [str(seeded["running"]), str(seeded["failed"])]
    assert report["campaigns"][0]["percent"] == 52.0
    depths = {(q["queue"], q["state"]): q["rows"] for q in report["queues"]}
    assert depths == {
        ("sync", "pending"): 3,
        ("sync", "claimed"): 0,
        ("sync", "dead"): 1,
        ("campaign", "pending"): 0,
        ("campaign", "claimed"): 0,
    }
    retrying = {r["queue"]: (r["rows"], r["latest_error"]) for r in report["retrying"]}
    assert retrying == {
        "sync": (1, "PassKit set_points answered 503: unavailable"),
        "campaign": (0, None),
    }
    assert report["dead_syncs"]["count"] == 1
    assert [(d["host"], d["pid"]) for d in report["daemons"]] == [("web1", 101), ("web2", 202)]
    assert [(d["share"], d["taken_over"]) for d in report["daemons"]] == [(75, 12), (75, 0)]
    assert [(w["queue"], w["rows"]) for w in report["work_by_program"]] == [("sync", 3)]
    assert report["dead_syncs"]["recent"][0]["member_id"] == "M-DEAD-1"
    [birthdays] = report["birthdays_today"]
    assert (birthdays["program_id"], birthdays["gifted"], birthdays["messaged"]) == (
        str(seeded["program"]),
        1,
        1,
    )


async def test_status_of_an_empty_database(
    make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _status(make_settings()) == 0
    assert capsys.readouterr().out == (
        "Daemons: none running\n"
        "\n"
        "Work by program: nothing owed to PassKit\n"
        "\n"
        "Campaigns: none\n"
        "\n"
        "Queues\n"
        "  Pass syncs     pending 0  claimed 0\n"
        "  Campaign sends pending 0  claimed 0\n"
        "\n"
        "PassKit retries: none waiting\n"
        "\n"
        "Dead pass syncs: none\n"
        "\n"
        "Birthdays today: no program has the birthday bot enabled\n"
        "\n"
        "Wallets: no passes yet\n"
        "\n"
        "History (kept: deliveries 90 days after their campaign, idle syncs 30 days)\n"
        "  Campaign deliveries           0 rows   40.0 kB  empty, 0 removed so far\n"
        "  Pass syncs                    0 rows   48.0 kB  empty, 0 removed so far\n"
    )
