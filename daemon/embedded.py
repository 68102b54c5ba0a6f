"""An embedded Postgres for running loyaltyd (and its tests) with nothing installed but Python.

Uses the `pgserver` wheel, which bundles Postgres binaries; started as root it runs the
server as a dedicated `pgserver` system user, since Postgres refuses to run as root. The server
listens on a unix socket inside the data directory only, never on a TCP port.

As root, pgserver makes every directory above the data directory and above its own binaries
readable and traversable by others (g+rx, o+rx) so that user can reach them. loyaltyd says so
in a warning naming those directories before it starts the server, rather than let a private
home directory open up silently.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.logs import get_logger

DATABASE_NAME = "loyaltyd"
_OTHERS_RX = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
log = get_logger(__name__)


def private_ancestors(paths: Iterable[Path]) -> list[Path]:
    """Directories above `paths` that others cannot read and traverse (what pgserver widens
    when it runs as root)."""
    found: set[Path] = set()
    for path in paths:
        for parent in path.resolve().parents:
            if parent.exists() and parent.stat().st_mode & _OTHERS_RX != _OTHERS_RX:
                found.add(parent)
    return sorted(found)


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    _server: Any = None

    def start(self, *, stop_on_exit: bool = True) -> str:
        """Start (or join) the server and return an admin DSN for its `postgres` database."""
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (root, systemd, CI).
                warnings.simplefilter("ignore")
                import pgserver
        except ImportError as exc:  # pragma: no cover - depends on the install
            from daemon.errors import ConfigError

            raise ConfigError(
                "DATABASE_URL is unset and the embedded Postgres is not installed: "
                "pip install 'loyaltyd[embedded]' or set DATABASE_URL"
            ) from exc
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._warn_about_permissions(Path(pgserver.__file__).parent)
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (root, systemd, CI): harmless.
            warnings.simplefilter("ignore")
            self._server = pgserver.get_server(  # type: ignore[attr-defined]
                self.data_dir.resolve(), cleanup_mode="stop" if stop_on_exit else None
            )
        return self.dsn("postgres")

    def _warn_about_permissions(self, binaries: Path) -> None:
        widened = private_ancestors([self.data_dir, binaries])
        if widened:
            log.warning(
                "embedded_postgres_widens_permissions",
                directories=[str(d) for d in widened],
                detail="running as root: pgserver runs Postgres as user 'pgserver' and makes "
                "these directories readable and traversable by others (g+rx,o+rx). Run "
                "loyaltyd as a normal user, or set DATABASE_URL, to avoid it.",
            )

    def dsn(self, database: str) -> str:
        uri: str = self._server.get_uri(database)
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
