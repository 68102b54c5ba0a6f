"""`loyaltyd status`: what the daemons are doing, read from the database (so it covers every
daemon on it): campaigns with progress bars, queue depths, dead syncs, today's birthdays."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from daemon.cli.commands._common import pool
from daemon.cli.progress import progress_bar
from daemon.core.config import Settings
from daemon.domain.wallet import LastSweep, SweepFigures, in_tier_points, swept_as
from daemon.store.retention import HistoryTable
from daemon.store.status import (
    OUTSTANDING,
    BirthdaysToday,
    CampaignProgress,
    DeadSync,
    Instance,
    ProgramWork,
    QueueDepth,
    Retrying,
    StatusReport,
    status_report,
)

HELP = (
    "Show campaigns with their progress, queue depths, work waiting on PassKit retries, dead "
    "pass syncs, today's birthday gifts, the daemons with their budget shares and the work "
    "owed per program, for every daemon on the database."
)
ERROR_WIDTH = 120
QUEUE_TITLES = {"sync": "Pass syncs", "campaign": "Campaign sends"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--campaigns",
        type=int,
        default=10,
        metavar="N",
        help="campaigns to show: unfinished ones first, then the newest (default 10)",
    )
    parser.add_argument(
        "--dead", type=int, default=5, metavar="N", help="dead syncs to list (default 5)"
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    async with pool(settings, auto_migrate=False) as db:
        report = await status_report(
            db,
            campaigns=max(0, args.campaigns),
            dead=max(0, args.dead),
            dead_daemons_shown=settings.loyaltyd_status_dead_hours * 3600,
        )
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        retention = (
            settings.loyaltyd_delivery_retention_days,
            settings.loyaltyd_sync_retention_days,
        )
        sys.stdout.write(render(report, settings.loyaltyd_stale_seconds, retention))
    return 0


# --- rendering (pure) --------------------------------------------------------------------------


def render(report: StatusReport, stale: float = 5.0, retention: tuple[int, int] = (90, 30)) -> str:
    """`retention`: the days deliveries and idle pass syncs are kept (0: for ever)."""
    sections = [
        _daemons(report.instances, stale),
        _work(report.work),
        _campaigns(report.campaigns),
        _queues(report.queues),
        _retrying(report.retrying),
        _dead_syncs(report.dead_sync_count, report.dead_syncs),
        _birthdays(report.birthdays),
        _wallets(report),
        _history(report.history, retention),
    ]
    return "\n".join(sections)


def campaign_line(c: CampaignProgress) -> str:
    """`[#####.....] 52% 5,200/10,000 sent 5,100 failed 20 skipped 80 — PROCESSING`"""
    line = (
        f"{progress_bar(c.percent)} {int(c.percent)}% {c.done:,}/{c.recipients:,} "
        f"sent {c.sent:,} failed {c.failed:,} skipped {c.skipped:,} — {c.status}"
    )
    if c.error:
        line += f": {_clip(c.error)}"
    if c.retrying is not None:
        line += f"\n    {c.retrying.describe()}"
    return line


def age(seconds: float) -> str:
    """A duration the way an operator reads it: 42s, 3m 05s, 2h 10m, 3d 4h."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _campaigns(campaigns: tuple[CampaignProgress, ...]) -> str:
    if not campaigns:
        return "Campaigns: none\n"
    lines = [f"Campaigns ({len(campaigns)} shown)"]
    for c in campaigns:
        title = " · ".join(
            part for part in (c.name or "(unnamed)", c.program_name, str(c.id)) if part
        )
        lines += [f"  {title}", f"    {campaign_line(c)}"]
    return "\n".join(lines) + "\n"


def _queues(depths: tuple[QueueDepth, ...]) -> str:
    lines = ["Queues"]
    for queue, title in QUEUE_TITLES.items():
        parts = [_depth(d) for d in depths if d.queue == queue and d.state in OUTSTANDING]
        lines.append(f"  {title:<15}" + "  ".join(parts))
    return "\n".join(lines) + "\n"


def _depth(d: QueueDepth) -> str:
    return f"{d.state} {d.rows:,}" + (f" (oldest {age(d.oldest_age)})" if d.rows else "")


def _daemons(instances: tuple[Instance, ...], stale: float) -> str:
    if not instances:
        return "Daemons: none running\n"
    live = sum(1 for i in instances if i.heartbeat_age < stale)
    lines = [f"Daemons: {live} live of {len(instances)} known"]
    for i in instances:
        state = "live" if i.heartbeat_age < stale else "dead, its work taken over"
        beat = age(i.heartbeat_age)
        line = f"  {str(i.id)[:8]} {i.host} pid {i.pid}: heartbeat {beat} ago ({state})"
        if i.rate_limit > 0:
            line += f", budget share {i.share:.0f}/{i.rate_limit:g} per s"
        line += f", sent {i.sent_per_second:.0f}/s, took over {i.taken_over:,} rows"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _work(work: tuple[ProgramWork, ...]) -> str:
    if not work:
        return "Work by program: nothing owed to PassKit\n"
    lines = ["Work by program (rows owed to PassKit, oldest):"]
    for w in work:
        program = w.program_name or (str(w.program_id) if w.program_id else "(no program)")
        title = QUEUE_TITLES.get(w.queue, w.queue)
        lines.append(f"  {program}: {title} {w.rows:,} (oldest {age(w.oldest_age)})")
    return "\n".join(lines) + "\n"


def _retrying(retrying: tuple[Retrying, ...]) -> str:
    waiting = [r for r in retrying if r.rows]
    if not waiting:
        return "PassKit retries: none waiting\n"
    lines = [
        "PassKit retries: work waiting after transient failures (PassKit down, slow or "
        "rate-limiting); it is retried with back-off until LOYALTYD_RETRY_MAX_AGE_SECONDS"
    ]
    for r in waiting:
        title = QUEUE_TITLES.get(r.queue, r.queue)
        timing = f"next try in {age(r.next_in)}" if r.rows > r.held else ""
        if r.held:
            held = f"{r.held:,} until PassKit answers again (probed every few seconds)"
            timing = f"{held}, {timing}" if timing else held
        lines.append(
            f"  {title:<15}{r.rows:,} waiting, {timing}: "
            f"{_clip(r.latest_error or 'no error recorded')}"
        )
    return "\n".join(lines) + "\n"


def _dead_syncs(count: int, recent: tuple[DeadSync, ...]) -> str:
    if count == 0:
        return "Dead pass syncs: none\n"
    lines = [
        f"Dead pass syncs: {count:,} (newest {len(recent)} below; after fixing the cause, "
        "`loyaltyd requeue-dead` retries them)"
    ]
    for d in recent:
        who = f"member {d.member_id}" if d.member_id else f"pass {d.pass_id}"
        where = f" ({d.program_name})" if d.program_name else ""
        lines.append(
            f"  {d.failed_at:%Y-%m-%d %H:%M:%S%z}  {who}{where}, {d.attempts} attempt(s): "
            f"{_clip(d.last_error or 'no error recorded')}"
        )
    return "\n".join(lines) + "\n"


def _birthdays(programs: tuple[BirthdaysToday, ...]) -> str:
    if not programs:
        return "Birthdays today: no program has the birthday bot enabled\n"
    lines = ["Birthdays today"]
    for b in programs:
        zone = b.timezone if b.timezone_known else f"unknown timezone {b.timezone!r}, UTC shown"
        note = "" if b.bot_enabled else " [bot disabled]"
        lines.append(
            f"  {b.program_name or b.program_id} ({zone}, {b.local_date}): {b.gifted:,} gifted, "
            f"{b.messaged:,} with the message{note}"
        )
    return "\n".join(lines) + "\n"


def _clip(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= ERROR_WIDTH else flat[: ERROR_WIDTH - 1] + "…"


WALLET_ORDER = ("INSTALLED", "UNINSTALLED", "INVALIDATED", "ISSUED", "DELETED")


def _wallets(report: StatusReport) -> str:
    lines = ["Wallets (what PassKit says of each program's passes)"]
    for w in report.wallets:
        if not (w.passes or w.sweeps or w.webhooks):
            continue  # nothing to say of a program without passes
        counts = sorted(w.passes.items(), key=lambda kv: _wallet_rank(kv[0]))
        shown = " · ".join(f"{n:,} {status.lower()}" for status, n in counts) or "no passes"
        note = "" if w.follows else " [status managed by hand]"
        lines.append(f"  {w.name or w.program_id}: {shown}{note}")
        lines += [f"    {_sweep_line(sweep)}" for sweep in w.sweeps]
        if w.webhooks:
            events = ", ".join(
                f"{n:,} {event.removeprefix('PASS_EVENT_').lower()}"
                for event, n in sorted(w.webhooks.items())
            )
            lines.append(f"    webhooks received: {events}")
    if len(lines) == 1 and not (report.inbox or report.unknown_webhooks):
        return "Wallets: no passes yet\n"
    unknown = f"; {report.unknown_webhooks:,} about passes loyaltyd does not know"
    lines.append(
        f"  Webhook inbox: {report.inbox:,} passes waiting to be read again"
        + (unknown if report.unknown_webhooks else "")
    )
    return "\n".join(lines) + "\n"


def _wallet_rank(status: str) -> int:
    return WALLET_ORDER.index(status) if status in WALLET_ORDER else len(WALLET_ORDER)


def _sweep_line(sweep: LastSweep) -> str:
    what = swept_as(sweep.protocol)
    when = _since(sweep.started_at)
    if sweep.state == "failed":
        return f"{what} swept {when}: failed: {_clip(sweep.error or '')}"
    if sweep.state == "running":
        return f"{what} sweep running since {when}"
    f = sweep.summary or SweepFigures()
    return (
        f"{what} swept {when}: {f.checked:,} checked, {f.installed:,} newly installed, "
        f"{f.uninstalled:,} uninstalled, {f.invalidated:,} invalidated, {f.deleted:,} deleted; "
        f"balances {f.drift_found:,} differed{in_tier_points(f.drift_tier_points)}, "
        f"{f.drift_repaired:,} repaired, {f.drift_reported:,} reported"
    )


def _since(value: datetime | None) -> str:
    if value is None:
        return "at an unknown time"
    return f"{age((datetime.now(UTC) - value).total_seconds())} ago"


_HISTORY_TITLES = {"campaign_deliveries": "Campaign deliveries", "pass_syncs": "Pass syncs"}


def _history(tables: tuple[HistoryTable, ...], retention: tuple[int, int]) -> str:
    deliveries, syncs = (f"{d} days" if d else "for ever" for d in retention)
    lines = [f"History (kept: deliveries {deliveries} after their campaign, idle syncs {syncs})"]
    for t in tables:
        oldest = f"oldest {t.oldest:%Y-%m-%d}" if t.oldest is not None else "empty"
        rows = f"{t.rows:,} row" + ("" if t.rows == 1 else "s")
        line = f"  {_HISTORY_TITLES.get(t.name, t.name):<20}{rows:>16} {_size(t.bytes):>9}"
        lines.append(f"{line}  {oldest}, {t.removed:,} removed so far")
    return "\n".join(lines) + "\n"


def _size(n: int) -> str:
    """Bytes the way `du -h` reads: 8.2 kB, 3.1 GB."""
    size = float(n)
    for unit in ("B", "kB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"
