"""An embedded Postgres for running loyaltyd (and its tests) with nothing installed but Python.

Uses the `pgserver` wheel, which bundles Postgres binaries; started as root it runs the
server as a dedicated `pgserver` system user, since Postgres refuses to run as root. The server
listens on a unix socket inside the data directory only, never on a TCP port.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATABASE_NAME = "loyaltyd"


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
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (root, systemd, CI): harmless.
            warnings.simplefilter("ignore")
            self._server = pgserver.get_server(  # type: ignore[attr-defined]
                self.data_dir.resolve(), cleanup_mode="stop" if stop_on_exit else None
            )
        return self.dsn("postgres")

    def dsn(self, database: str) -> str:
        uri: str = self._server.get_uri(database)
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
