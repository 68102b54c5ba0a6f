"""Is this daemon ready: the database answers, the LISTEN connection is alive, and it is not
stopping. Read by /readyz and by the systemd watchdog.

`Running` is what the HTTP server and the systemd notifier see of the running daemon
(`daemon.app.Daemon` is one); taking a protocol keeps them from importing the composition root.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Protocol

from daemon.core.config import Settings
from daemon.core.metrics import Metrics
from daemon.store.listener import Listener
from daemon.store.pool import Pool
from daemon.store.status import database_ok


class Running(Protocol):
    @property
    def settings(self) -> Settings: ...
    @property
    def pool(self) -> Pool: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def stopping(self) -> asyncio.Event: ...
    @property
    def listener(self) -> Listener | None: ...


@dataclass(frozen=True)
class Readiness:
    database: bool
    listener: bool
    stopping: bool

    @property
    def ready(self) -> bool:
        return self.database and self.listener and not self.stopping

    def to_dict(self) -> dict[str, bool]:
        return {"ready": self.ready, **asdict(self)}


def listener_alive(running: Running) -> bool:
    return running.listener is not None and running.listener.alive


async def readiness(running: Running, within: float = 2.0) -> Readiness:
    return Readiness(
        database=await database_ok(running.pool, within),
        listener=listener_alive(running),
        stopping=running.stopping.is_set(),
    )
