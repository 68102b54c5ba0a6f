"""What an operator sees of wallet truth: `loyaltyd status` and /metrics show, per program,
passes by wallet status, the last sweep and what it found, webhooks by event, and the inbox."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from prometheus_client import generate_latest

from daemon.cli.commands.status import render
from daemon.core.config import Settings
from daemon.core.metrics import Metrics
from daemon.domain.wallet import SweepClass
from daemon.passkit.client import PassKitClient
from daemon.store.status import refresh_queue_gauges, status_report
from daemon.store.wallet import receive_event
from daemon.testing.fakepasskit import FakePassKit
from tests.harness import fake_passkit, settings_for
from tests.wallet.support import PROGRAM_CLASS, sweeper, wallet_program


@pytest.fixture
async def fake() -> AsyncIterator[FakePassKit]:
    async with fake_passkit(issued=None) as f:
        yield f


async def _swept(
    pool: asyncpg.Pool, dsn: str, fake: FakePassKit, make_settings: Callable[..., Settings]
) -> uuid.UUID:
    statuses = ["PASS_INSTALLED"] * 6 + ["PASS_UNINSTALLED"] * 3 + [None]
    program = await wallet_program(
        pool, fake, statuses, passkit_points=lambda i: 3.0 if i == 1 else 10.0
    )
    settings = settings_for(make_settings, fake.url)
    async with PassKitClient(settings) as client:
        await sweeper(client, pool, settings, dsn).sweep(
            SweepClass(program, "MEMBERSHIP", PROGRAM_CLASS, "Wallet Bar")
        )
    await receive_event(pool, "w-2", "MEMBERSHIP", "PASS_EVENT_UNINSTALLED", PROGRAM_CLASS)
    await receive_event(pool, "nobody", "MEMBERSHIP", "PASS_EVENT_INSTALLED", "elsewhere")
    return program


async def test_status_shows_each_programs_wallets(
    pool: asyncpg.Pool,
    database_url: str,
    fake: FakePassKit,
    make_settings: Callable[..., Settings],
) -> None:
    await _swept(pool, database_url, fake, make_settings)
    report = await status_report(pool, campaigns=5, dead=5)
    text = render(report)
    section = text[text.index("Wallets") :].splitlines()
    assert section[1] == "  Wallet Bar: 6 installed · 3 uninstalled · 1 deleted"
    assert section[2].startswith("    members swept ")
    assert section[2].endswith(
        ": 9 checked, 0 newly installed, 3 uninstalled, 0 invalidated, 1 deleted; balances 1 "
        "differed, 1 repaired, 0 reported"
    )
    assert section[3] == "    webhooks received: 1 uninstalled"
    assert section[4] == (
        "  Webhook inbox: 1 passes waiting to be read again; 1 about passes loyaltyd does not know"
    )
    document = report.to_dict()
    (wallet,) = document["wallets"]
    assert wallet["passes"] == {"INSTALLED": 6, "UNINSTALLED": 3, "DELETED": 1}
    assert document["webhook_inbox"] == {"waiting": 1, "unknown_passes": 1}


async def test_metrics_show_each_programs_wallets(
    pool: asyncpg.Pool,
    database_url: str,
    fake: FakePassKit,
    make_settings: Callable[..., Settings],
) -> None:
    program = await _swept(pool, database_url, fake, make_settings)
    metrics = Metrics()
    await refresh_queue_gauges(pool, metrics, within=5)
    text = generate_latest(metrics.registry).decode()
    assert f'loyaltyd_wallet_passes{{program="{program}",status="UNINSTALLED"}} 3.0' in text
    assert f'loyaltyd_wallet_passes{{program="{program}",status="INSTALLED"}} 6.0' in text
    assert f'loyaltyd_wallet_sweep_age_seconds{{program="{program}"}}' in text
    assert "loyaltyd_wallet_inbox_depth 1.0" in text
