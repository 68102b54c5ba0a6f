"""The campaign side of a daemon as a process of its own, for the fault tests:

    python -m tests.campaign_daemon      # settings from the environment, like `loyaltyd run`

It wires the listener, the campaign planner and the delivery worker exactly as the
composition root does, and stops on SIGTERM the same way (stop claiming, drain within the
grace period, give the rest back, exit 0). Once `loyaltyd run` wires campaigns itself the
fault tests can start that instead (CAMPAIGN_DAEMON in tests/test_campaign_faults.py).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid

from daemon.campaign_queue import CHANNEL as DELIVERIES_CHANNEL
from daemon.campaign_queue import CampaignDeliveryQueue
from daemon.campaigns import CHANNEL as CAMPAIGNS_CHANNEL
from daemon.campaigns import CampaignPlanner
from daemon.config import Settings
from daemon.db import create_pool
from daemon.listener import Listener
from daemon.logs import configure_logging, get_logger
from daemon.metrics import Metrics
from daemon.passkit import PassKitClient
from daemon.worker import Worker, WorkerConfig

log = get_logger("campaign_daemon")


async def main() -> int:
    settings = Settings()
    configure_logging(settings.loyaltyd_log_level, settings.loyaltyd_log_format, settings.secrets())
    assert settings.database_url is not None, "DATABASE_URL is required"
    dsn = settings.database_url.get_secret_value()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stopping.set)
    metrics = Metrics()
    pool = await create_pool(dsn, settings.loyaltyd_pool_size)
    try:
        async with PassKitClient(settings, metrics) as client:
            doorbells = {CAMPAIGNS_CHANNEL: asyncio.Event(), DELIVERIES_CHANNEL: asyncio.Event()}
            config = WorkerConfig(
                slots=settings.worker_slots,
                poll_interval=settings.loyaltyd_poll_interval_seconds,
                lease_seconds=settings.loyaltyd_lease_seconds,
            )
            worker = Worker(
                CampaignDeliveryQueue(pool, client, settings, metrics),
                config,
                owner=uuid.uuid4(),
                doorbell=doorbells[DELIVERIES_CHANNEL],
                metrics=metrics,
            )
            planner = CampaignPlanner(pool, client, settings, metrics)
            listener = Listener(
                dsn, doorbells, probe_interval=settings.loyaltyd_listener_probe_seconds
            )
            async with asyncio.TaskGroup() as tg:
                tg.create_task(listener.run(stopping))
                tg.create_task(planner.run(stopping, doorbells[CAMPAIGNS_CHANNEL]))
                tg.create_task(worker.run(stopping, settings.loyaltyd_shutdown_grace_seconds))
                log.info("daemon_ready", instance=str(worker.owner))
    finally:
        await pool.close()
    log.info("daemon_stopped")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
