"""`loyaltyd check` against the fake PassKit playing a live account: each step's line, the exit
code, and that nothing but the test pass's message field is written (with its own value)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from daemon.passkit.check import CheckRequest, run_check
from daemon.testing.fakepasskit import ROUTE_CREATE_MESSAGE, ROUTE_UPDATE_MEMBER, FakePassKit
from tests.harness import REPO
from tests.passkit_fixtures import API_KEY, API_SECRET, make_settings

FIELD = "loyaltydMessage"


@pytest_asyncio.fixture(loop_scope="function")
async def account() -> AsyncIterator[FakePassKit]:
    """A PassKit account with one program, tier, template and member (the test pass)."""
    async with FakePassKit(API_KEY, API_SECRET) as fake:
        fake.add_program("prog", name="Joe's Pizza")
        fake.add_tier("prog", "gold", template_id="tmpl")
        fake.add_template("tmpl", {f"meta.{FIELD}": "%@", "members.member.points": "%@ pts"})
        fake.add_pass(
            "pass1",
            class_id="prog",
            tier_id="gold",
            points=12,
            metadata={"favourite": "salami", FIELD: "Last week's news"},
        )
        yield fake


async def check_cli(fake_url: str, *args: str, **env: str) -> tuple[int, list[str]]:
    environ = {
        **os.environ,
        "PASSKIT_API_KEY": API_KEY,
        "PASSKIT_API_SECRET": API_SECRET,
        "PASSKIT_BASE_URL": fake_url,
        "PASSKIT_RATE_LIMIT": "0",
        "LOYALTYD_LOG_LEVEL": "ERROR",
        **env,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon",
        "check",
        *args,
        cwd=REPO,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode().splitlines()


def names(lines: list[str]) -> list[tuple[str, str]]:
    return [(line[:4].strip(), line[5:].split(":")[0]) for line in lines[:-1]]


async def test_a_sound_set_up_passes_every_step_and_writes_nothing_new(
    account: FakePassKit,
) -> None:
    before = account.metadata_of("pass1")
    code, lines = await check_cli(
        account.url, "--pass-id", "pass1", "--template", PASSKIT_METADATA_MODE="merge"
    )
    assert code == 0, lines
    assert names(lines) == [
        ("ok", "token"),
        ("ok", "region"),
        ("ok", "program"),
        ("ok", "tier"),
        ("ok", "metaData"),
        ("ok", "template"),
    ]
    assert "PassKit merges a partial map (1 other field(s) kept)" in lines[4]
    assert lines[-1] == "6 ok, 0 to fix"
    assert account.metadata_of("pass1") == before
    assert account.messages_for("pass1") == [before[FIELD]], "rewritten with its own value"
    assert (account.tier_of("pass1"), account.points_of("pass1")) == ("gold", 12)


@pytest.mark.parametrize("mode", ["read_modify_write", "merge"])
async def test_a_replacing_passkit_is_reported_and_the_wiped_fields_restored(
    account: FakePassKit, mode: str
) -> None:
    account.merge_metadata = False
    before = account.metadata_of("pass1")
    code, lines = await check_cli(account.url, "--pass-id", "pass1", PASSKIT_METADATA_MODE=mode)
    (line,) = [entry for entry in lines if "metaData" in entry]
    assert "PassKit REPLACES a partial map: it wiped favourite (restored)" in line
    if mode == "merge":
        assert (code, line[:4]) == (1, "FAIL")
        assert "set PASSKIT_METADATA_MODE=read_modify_write" in line
    else:
        assert (code, line[:4]) == (0, "ok  ")
    assert account.metadata_of("pass1") == before


async def test_a_wrong_secret_fails_the_token_step(account: FakePassKit) -> None:
    code, lines = await check_cli(
        account.url,
        "--pass-id",
        "pass1",
        PASSKIT_API_SECRET="not-the-secret-0123456789abcdefghijklmnop",
    )
    assert code == 1
    assert lines[0].startswith("FAIL token: PassKit at ")
    assert "refused the token" in lines[0]


async def test_an_unknown_test_pass_is_reported(account: FakePassKit) -> None:
    code, lines = await check_cli(account.url, "--pass-id", "nobody")
    assert code == 1
    assert lines[1].startswith("FAIL test pass: no MEMBERSHIP pass nobody on this account")


async def test_the_wrong_region_is_found_and_named(account: FakePassKit) -> None:
    async with FakePassKit("another-account", API_SECRET) as other_region:
        settings = make_settings(other_region.url)
        steps = await run_check(settings, CheckRequest("pass1"), regions=[account.url])
    assert [s.line() for s in steps][1] == (
        f"FAIL region: the test pass is at {account.url} (a host that is not one of "
        f"PassKit's regions), not at {other_region.url}: set PASSKIT_BASE_URL={account.url}"
    )


async def test_a_template_without_a_change_message_is_reported(account: FakePassKit) -> None:
    account.add_template("tmpl", {f"meta.{FIELD}": "News"})
    steps = await run_check(make_settings(account.url), CheckRequest("pass1", template=True))
    (template,) = [s for s in steps if s.name == "template"]
    assert not template.ok and "without a %@ change message" in template.detail


async def test_a_pass_with_one_field_cannot_prove_merging(account: FakePassKit) -> None:
    account.add_pass("bare", class_id="prog", tier_id="gold", metadata={FIELD: "news"})
    steps = await run_check(make_settings(account.url), CheckRequest("bare"))
    (metadata,) = [s for s in steps if s.name == "metaData"]
    assert not metadata.ok and "it cannot tell with 1" in metadata.detail
    assert account.count(ROUTE_UPDATE_MEMBER) == 0, "nothing written"


async def test_without_a_message_field_another_field_is_rewritten_with_its_own_value(
    account: FakePassKit,
) -> None:
    """Nothing on the pass changes and no message field appears (an alert could show)."""
    account.add_pass("quiet", class_id="prog", tier_id="gold", metadata={"a": "1", "b": "2"})
    steps = await run_check(make_settings(account.url), CheckRequest("quiet"))
    (metadata,) = [s for s in steps if s.name == "metaData"]
    assert metadata.ok, metadata.detail
    (write,) = [r.body for r in account.requests if r.route == ROUTE_UPDATE_MEMBER]
    assert write == {"id": "quiet", "metaData": {"a": "1"}}
    assert account.metadata_of("quiet") == {"a": "1", "b": "2"}
    assert account.messages_for("quiet") == []


async def test_try_message_sends_one_message_to_the_test_pass_only(account: FakePassKit) -> None:
    account.add_pass("someone-else", class_id="prog")
    code, lines = await check_cli(account.url, "--pass-id", "pass1", "--try-message", "Hello!")
    assert code == 0, lines
    assert any(line.startswith("ok   messages api: message ") for line in lines)
    assert account.count(ROUTE_CREATE_MESSAGE) == 1
    assert account.bulk_recipients() == {"pass1": 1}


async def test_without_keys_it_says_it_needs_them(tmp_path: Any) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PASSKIT_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon",
        "check",
        "--pass-id",
        "pass1",
        cwd=tmp_path,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert b"needs PASSKIT_API_KEY and PASSKIT_API_SECRET" in out
