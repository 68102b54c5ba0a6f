"""CSV audiences: the member_id file is read leniently, downloaded strictly (https, allowed
host, size and time limits), and a CSV campaign reaches exactly the listed members."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from daemon.campaigns.csv_audience import CsvFetcher, parse_member_csv
from daemon.campaigns.rules import check_csv_url
from daemon.core.config import Settings
from daemon.core.errors import CampaignInputError
from daemon.domain.campaigns import CsvUrl
from tests.campaign_support import bulk_audience, campaign_rig, insert_campaign
from tests.factories import make_program
from tests.harness import daemon_env, fake_passkit, messages_by_pass

HOST = "127.0.0.1"
MAX_BYTES = 2_000
TIMEOUT = 0.5


# --- reading ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "ids"),
    [
        (b"member_id\nM-1\nM-2\n", ("M-1", "M-2")),
        (b"\xef\xbb\xbfMember_ID,name\r\nM-1,Ann\r\n M-2 ,Bob\r\n", ("M-1", "M-2")),
        (b"name;member id\nAnn;M-1\nBob;M-2", ("M-1", "M-2")),
        (b"email\tmember-id\na@x\tM-1\n", ("M-1",)),
        (b'"member_id","note"\n"M-1","a, b"\n"M-1",""\n,\n"M-3"\n', ("M-1", "M-3")),
        (b"name,member_id\nshort-row\nAnn,M-9\n", ("M-9",)),
    ],
)
def test_member_ids_are_read_from_the_member_id_column(data: bytes, ids: tuple[str, ...]) -> None:
    assert parse_member_csv(data) == ids


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"id,name\n1,Ann\n", "no member_id column in its first line (found: id,name)"),
        (b"", "no member_id column in its first line (found: nothing)"),
        (b"member_id\n\n  \n", "the CSV lists no member ids"),
        ("member_id\nM-é\n".encode("latin-1"), "the CSV is not UTF-8 text"),
        (b'member_id\nM-1\n"M-2\n', "the CSV is malformed at line 3"),
    ],
)
def test_unreadable_csv_is_refused_with_the_reason(data: bytes, error: str) -> None:
    with pytest.raises(CampaignInputError) as caught:
        parse_member_csv(data)
    assert error in str(caught.value)


# --- downloading -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={HOST}",
            "-addext",
            f"subjectAltName=IP:{HOST},DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    yield Tls(cert, key)


DOWNLOADS: dict[str, int] = {}


def _csv_app() -> web.Application:
    async def members(_: web.Request) -> web.Response:
        body = "member_id,first_name\nM-csv-1,A\nM-csv-3,C\nM-nobody,X\nM-csv-1,A\n"
        return web.Response(text=body, content_type="text/csv")

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"member_id\n" + b"M-1\n" * MAX_BYTES)

    async def endless(request: web.Request) -> web.StreamResponse:
        # No Content-Length: the limit must hold while reading.
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"member_id\n")
        for _ in range(1000):
            await response.write(b"M-1\n" * 100)
        return response

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(TIMEOUT * 4)
        return web.Response(text="member_id\nM-1\n")

    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPFound("/members.csv")

    async def no_column(_: web.Request) -> web.Response:
        return web.Response(text="id,name\n1,A\n")

    hostile = {
        "/long-header.csv": b"member_id," + b"x" * 140_000 + b"\nM-csv-1,1\n",
        "/long-cell.csv": b"member_id\n" + b'"' + b"y" * 140_000 + b'"\n',
        "/cr-only.csv": b"member_id\rM-csv-1\rM-csv-3\r",
        "/nul.csv": b"member_id\nM-csv-1\x00\n",
        "/bad-quote.csv": b'member_id\n"M-csv-1\n',
    }

    async def hostile_file(request: web.Request) -> web.Response:
        DOWNLOADS[request.path] = DOWNLOADS.get(request.path, 0) + 1
        return web.Response(body=hostile[request.path], content_type="text/csv")

    app = web.Application()
    for path in hostile:
        app.router.add_get(path, hostile_file)
    app.router.add_get("/members.csv", members)
    app.router.add_get("/big.csv", big)
    app.router.add_get("/endless.csv", endless)
    app.router.add_get("/slow.csv", slow)
    app.router.add_get("/moved.csv", moved)
    app.router.add_get("/no-column.csv", no_column)
    return app


@pytest.fixture
async def csv_server(tls: Tls) -> AsyncIterator[str]:
    """Base URL of an https server holding the test CSVs."""
    runner = web.AppRunner(_csv_app(), handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0, ssl_context=tls.server_context())
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://{HOST}:{port}"
    finally:
        await runner.cleanup()


def _settings(make_settings: Callable[..., Settings], **overrides: object) -> Settings:
    values: dict[str, object] = {
        "loyaltyd_csv_allowed_hosts": HOST,
        "loyaltyd_csv_max_bytes": MAX_BYTES,
        "loyaltyd_csv_timeout_seconds": TIMEOUT,
    }
    values.update(overrides)
    return make_settings(**values)


async def test_csv_is_downloaded_over_https_from_an_allowed_host(
    csv_server: str, tls: Tls, make_settings: Callable[..., Settings]
) -> None:
    fetcher = CsvFetcher(_settings(make_settings), ssl_context=tls.client_context())
    assert await fetcher.member_ids(_checked(f"{csv_server}/members.csv")) == (
        "M-csv-1",
        "M-csv-3",
        "M-nobody",
    )


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/big.csv", "the CSV is larger than 2,000 bytes"),
        ("/endless.csv", "the CSV is larger than 2,000 bytes"),
        ("/slow.csv", "downloading the CSV took longer than 0.5 s"),
        ("/moved.csv", "the CSV URL redirects (HTTP 302); give the final https URL"),
        ("/gone.csv", "the CSV server answered HTTP 404"),
        ("/no-column.csv", "the CSV has no member_id column"),
    ],
)
async def test_a_bad_download_is_refused_with_the_reason(
    csv_server: str, tls: Tls, make_settings: Callable[..., Settings], path: str, error: str
) -> None:
    fetcher = CsvFetcher(_settings(make_settings), ssl_context=tls.client_context())
    with pytest.raises(CampaignInputError) as caught:
        await fetcher.member_ids(_checked(csv_server + path))
    assert error in str(caught.value)


async def test_a_certificate_the_system_does_not_trust_is_refused(
    csv_server: str, make_settings: Callable[..., Settings]
) -> None:
    fetcher = CsvFetcher(_settings(make_settings))
    with pytest.raises(CampaignInputError, match=r"could not download the CSV: .*certificate"):
        await fetcher.member_ids(_checked(f"{csv_server}/members.csv"))


async def test_a_url_on_a_host_not_allowed_never_becomes_fetchable(csv_server: str) -> None:
    """`CsvFetcher.member_ids` takes only a `CsvUrl` (mypy holds it), and the one check that
    makes one refuses a host not allowed."""
    with pytest.raises(CampaignInputError, match=r"host '127\.0\.0\.1' is not allowed"):
        check_csv_url(f"{csv_server}/members.csv", ("localhost",))


def _checked(url: str) -> CsvUrl:
    return check_csv_url(url, (HOST,))


# --- campaigns -------------------------------------------------------------------------------


async def _send_csv_campaign(
    pool: asyncpg.Pool,
    database_url: str,
    settings_for_fake: Callable[[str], Settings],
    tls: Tls,
    url: str,
) -> tuple[asyncpg.Record, Counter[str]]:
    """A CSV campaign from `url` to a program of 4 members (`csv-1`…`csv-4`), run to its end
    by a planner and a worker; the finished row and the messages per pass at the fake."""
    program = await make_program(pool)
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, 4, prefix="csv")
    async with fake_passkit() as fake:
        settings = settings_for_fake(fake.url)
        fetcher = CsvFetcher(settings, ssl_context=tls.client_context())
        async with campaign_rig(pool, database_url, settings, csv_fetcher=fetcher) as rig:
            row = await rig.finished(
                await insert_campaign(pool, program_id=program, segment="CSV", csv_upload_url=url)
            )
    return row, messages_by_pass(fake)


async def test_csv_campaign_reaches_the_listed_members_and_reports_unknown_ids(
    pool: asyncpg.Pool,
    database_url: str,
    make_settings: Callable[..., Settings],
    csv_server: str,
    tls: Tls,
) -> None:
    row, sent = await _send_csv_campaign(
        pool,
        database_url,
        lambda url: _settings(make_settings, **_fake_overrides(url)),
        tls,
        f"{csv_server}/members.csv",
    )
    assert row["status"] == "COMPLETED", row["error"]
    assert (row["recipient_count"], row["sent_count"]) == (2, 2)
    assert (row["unknown_member_count"], row["unknown_member_ids"]) == (1, ["M-nobody"])
    assert sent == {"csv-1": 1, "csv-3": 1}


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/no-column.csv", "the CSV has no member_id column"),
        ("/big.csv", "the CSV is larger than 2,000 bytes"),
        ("/slow.csv", "downloading the CSV took longer than 0.5 s"),
    ],
)
async def test_csv_campaign_with_a_bad_file_fails_and_sends_nothing(
    pool: asyncpg.Pool,
    database_url: str,
    make_settings: Callable[..., Settings],
    csv_server: str,
    tls: Tls,
    path: str,
    error: str,
) -> None:
    program = await make_program(pool)
    async with pool.acquire() as conn:
        await bulk_audience(conn, program, 4, prefix="csv")
    async with fake_passkit() as fake:
        settings = _settings(make_settings, **_fake_overrides(fake.url))
        fetcher = CsvFetcher(settings, ssl_context=tls.client_context())
        async with campaign_rig(pool, database_url, settings, csv_fetcher=fetcher) as rig:
            bad = await rig.finished(
                await insert_campaign(
                    pool, program_id=program, segment="CSV", csv_upload_url=csv_server + path
                )
            )
            good = await rig.finished(
                await insert_campaign(
                    pool, program_id=program, segment="CSV", member_ids=["M-csv-2"]
                )
            )
    assert bad["status"] == "FAILED" and error in bad["error"]
    assert good["status"] == "COMPLETED"
    assert messages_by_pass(fake) == {"csv-2": 1}


def _fake_overrides(url: str) -> dict[str, object]:
    return {k.lower(): v for k, v in daemon_env(url).items()}


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/long-header.csv", "first line is 140,010 characters long"),
        ("/long-cell.csv", "a cell is longer than 131,072 characters"),
        ("/nul.csv", "contains NUL bytes"),
        ("/bad-quote.csv", "the CSV is malformed"),
    ],
)
async def test_a_hostile_csv_fails_the_campaign_after_one_download(
    pool: asyncpg.Pool,
    database_url: str,
    make_settings: Callable[..., Settings],
    csv_server: str,
    tls: Tls,
    path: str,
    error: str,
) -> None:
    """Never PROCESSING with no error, never fetched again each lease: FAILED, readable."""
    DOWNLOADS.pop(path, None)
    row, sent = await _send_csv_campaign(
        pool,
        database_url,
        lambda url: _settings(
            make_settings, loyaltyd_csv_max_bytes=1_000_000, **_fake_overrides(url)
        ),
        tls,
        csv_server + path,
    )
    assert row["status"] == "FAILED" and error in row["error"], row["error"]
    assert DOWNLOADS[path] == 1
    assert sent == {}


async def test_a_csv_with_cr_only_line_ends_is_read(
    pool: asyncpg.Pool,
    database_url: str,
    make_settings: Callable[..., Settings],
    csv_server: str,
    tls: Tls,
) -> None:
    row, sent = await _send_csv_campaign(
        pool,
        database_url,
        lambda url: _settings(make_settings, **_fake_overrides(url)),
        tls,
        csv_server + "/cr-only.csv",
    )
    assert row["status"] == "COMPLETED"
    assert sent == {"csv-1": 1, "csv-3": 1}
