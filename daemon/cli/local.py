"""`loyaltyd run` on its embedded default (no DATABASE_URL): a whole loyaltyd on one machine.

On top of the embedded Postgres and PassKit's mock mode it serves HTTP on 127.0.0.1 (port
8080 unless LOYALTYD_HTTP_PORT says otherwise) with the console on, keeps the console's
signing secret and an API key in the data directory (made once, mode 0600), makes
admin@localhost the admin of every program, and once the daemon is ready prints where to look.
None of this happens with DATABASE_URL set: production is configured, not guessed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from pydantic import SecretStr

from daemon.console.auth import INVITE_HOURS, digest, new_token
from daemon.core.config import Settings
from daemon.core.logs import get_logger
from daemon.store import console as console_store
from daemon.store.embedded import EmbeddedPostgres
from daemon.store.local import local_admin
from daemon.store.pool import Pool

log = get_logger(__name__)

LOCAL_ADMIN: Final = "admin@localhost"
DEFAULT_PORT: Final = 8080
API_KEY_FILE: Final = "api-key"
CONSOLE_SECRET_FILE: Final = "console.secret"  # noqa: S105 - a file name, not a secret


def local_settings(settings: Settings) -> Settings:
    """The settings of a local run: HTTP and the console on, their secrets kept in the data
    directory. What the user set stays as set."""
    data_dir = settings.loyaltyd_data_dir.resolve()
    update: dict[str, object] = {}
    if settings.loyaltyd_http_port is None:
        update["loyaltyd_http_port"] = DEFAULT_PORT
    if "loyaltyd_console" not in settings.model_fields_set:
        update["loyaltyd_console"] = True
    if settings.loyaltyd_console_secret is None:
        update["loyaltyd_console_secret"] = SecretStr(_kept(data_dir / CONSOLE_SECRET_FILE))
    if not settings.loyaltyd_api_keys:
        update["loyaltyd_api_keys"] = [SecretStr(_kept(data_dir / API_KEY_FILE))]
    return settings.model_copy(update=update)


def _kept(path: Path) -> str:
    """A secret made once and kept in `path` (0600, its owner's alone)."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        value = ""
    if len(value) >= 32:
        return value
    value = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(value + "\n")
    os.chmod(path, 0o600)
    return value


def _say(text: str) -> None:
    print(text, flush=True)  # at once, also into a pipe or a journal


def welcome(
    settings: Settings, embedded: EmbeddedPostgres, write: Callable[[str], object] = _say
) -> Callable[[Pool], Awaitable[None]]:
    """What to do once the daemon is ready: give the local admin every program and print
    where to look (with a one-time sign-in link while they have no password)."""

    async def say(pool: Pool) -> None:
        link = None
        if settings.loyaltyd_console:
            try:
                link = await _first_sign_in(pool, settings)
            except Exception as exc:  # the daemon runs on; only the link is missing
                log.warning("local_admin_failed", error=repr(exc))
        write(welcome_text(settings, embedded, link))

    return say


async def _first_sign_in(pool: Pool, settings: Settings) -> str | None:
    user_id, has_password = await local_admin(pool, LOCAL_ADMIN)
    if has_password:
        return None
    token = new_token()
    await console_store.create_invite(pool, digest(token), user_id, INVITE_HOURS)
    return f"{base_url(settings)}/console/invite/{token}"


def base_url(settings: Settings) -> str:
    host = settings.loyaltyd_http_host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.loyaltyd_http_port or DEFAULT_PORT}"


def welcome_text(settings: Settings, embedded: EmbeddedPostgres, link: str | None) -> str:
    data = embedded.root
    url = base_url(settings)
    shown = _shown(data)
    lines = [
        "",
        "loyaltyd is running on this machine.",
        f"  data     {shown}/  (embedded Postgres; psql while it runs:",
        f'           PGPASSWORD="$(cat {shown}/postgres.password)" '
        f"psql -h {embedded.socket_dir} -U postgres loyaltyd)",
        f"  PassKit  {_passkit(settings)}",
    ]
    if settings.loyaltyd_console:
        lines.append(f"  console  {url}/console/")
        if link is not None:
            lines.append(f"           first sign-in, as {LOCAL_ADMIN} (works once, 24 h): {link}")
        else:
            lines.append(
                f"           sign in as {LOCAL_ADMIN} with your password (a new link: "
                f"loyaltyd console invite --email {LOCAL_ADMIN} --operator)"
            )
    lines += [
        f"  API      {url}/api/…  with the header X-API-Key: "
        f'export KEY="$(cat {shown}/{API_KEY_FILE})"',
        f"  stop     Ctrl-C; the data stays in {shown}/ (delete it to start afresh)",
        "",
    ]
    return "\n".join(lines)


def _passkit(settings: Settings) -> str:
    if not settings.passkit_mock_mode:
        return f"{settings.passkit_base_url} (PASSKIT_API_KEY's account)"
    rate = settings.passkit_rate_limit
    pace = f"at most {rate:g} requests/s" if rate > 0 else "no rate limit"
    return (
        f"mock mode: nothing leaves this machine; a PassKit in-process answers in "
        f"{settings.passkit_mock_latency_ms:g} ms, {pace}"
    )


def _shown(path: Path) -> str:
    """`path` as short as it is clear: relative to the working directory when inside it."""
    try:
        relative = path.relative_to(Path.cwd())
    except ValueError:
        return str(path)
    return f"./{relative}" if str(relative) != "." else "."
