"""Which daemons `loyaltyd status` (and the console's operations page) list: every daemon that
was ready at some point and still beats, and a dead one only for LOYALTYD_STATUS_DEAD_HOURS."""

from __future__ import annotations

import uuid

import asyncpg

from daemon.cli.commands.status import render
from daemon.store.status import status_report


async def _daemon(conn: asyncpg.Connection, *, ready: bool, silent_for: str, pid: int) -> uuid.UUID:
    """A heartbeat row as a daemon writes it, `silent_for` after its last beat."""
    daemon_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO loyaltyd.instances (id, host, pid, heartbeat_at, ready_at) "
        "VALUES ($1, 'host-a', $2, now() - $3::text::interval, "
        "        CASE WHEN $4 THEN now() - $3::text::interval END)",
        daemon_id,
        pid,
        silent_for,
        ready,
    )
    return daemon_id


async def test_status_lists_live_and_lately_dead_daemons_that_were_ready(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    live = await _daemon(conn, ready=True, silent_for="0 s", pid=101)
    lately_dead = await _daemon(conn, ready=True, silent_for="20 min", pid=102)
    await _daemon(conn, ready=True, silent_for="61 min", pid=103)  # dead over an hour
    await _daemon(conn, ready=False, silent_for="0 s", pid=104)  # starting, never ready yet
    await _daemon(conn, ready=False, silent_for="10 min", pid=105)  # a start that crashed

    report = await status_report(pool, campaigns=0, dead=0, dead_daemons_shown=3600)
    assert [i.id for i in report.instances] == [live, lately_dead]
    text = render(report, stale=5.0)
    assert "Daemons: 1 live of 2 known" in text
    assert "pid 103" not in text and "pid 104" not in text and "pid 105" not in text

    longer = await status_report(pool, campaigns=0, dead=0, dead_daemons_shown=2 * 3600)
    assert len(longer.instances) == 3
