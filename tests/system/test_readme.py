"""The README's examples are tests. In a fresh directory, `loyaltyd run` starts on its embedded
default as `make run` starts it; then every `sql` and `sh` block of the README runs in order,
as a newcomer pastes it (shell blocks in one shell session, SQL through `psql`), except the
blocks marked `<!-- not run: why -->`. What the README shows as output is compared with what
the commands print: the block `make run` prints, and `loyaltyd status` after the first
campaign. The HTTP examples run against the daemon (on a free port instead of 8080)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.store.embedded import binaries
from tests.conftest import REPO
from tests.ops.test_http_daemon import free_port

pytestmark = pytest.mark.slow

README = REPO / "README.md"
_BLOCK = re.compile(
    r"(?:<!-- not run: (?P<why>[^>]+?) -->\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)\n```\n",
    re.DOTALL,
)


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    skipped: str | None  # why it is not run
    output: str | None  # the `text` block shown right after it, if any


def readme_blocks(text: str) -> list[Block]:
    found = list(_BLOCK.finditer(text))
    blocks = []
    for i, match in enumerate(found):
        if match["lang"] == "text":
            continue
        output = None
        after = found[i + 1] if i + 1 < len(found) else None
        between = text[match.end() : after.start()] if after is not None else "x"
        if after is not None and after["lang"] == "text" and not between.strip():
            output = after["body"]
        blocks.append(Block(match["lang"], match["body"], match["why"], output))
    return blocks


def test_every_code_block_is_run_or_says_why_not() -> None:
    blocks = readme_blocks(README.read_text())
    assert {b.lang for b in blocks} <= {"sh", "sql"}, "a block in another language"
    assert sum(1 for b in blocks if b.lang == "sql" and not b.skipped) >= 2
    assert all(b.skipped for b in blocks if "sudo" in b.body)


# --- normalising what differs from run to run -------------------------------------------------

_NORMAL = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"^  [0-9a-f]{8} \S+ pid \d+:", re.MULTILINE), "  <daemon>:"),
    (re.compile(r"heartbeat \d+s ago"), "heartbeat <age> ago"),
    (re.compile(r"sent \d+/s"), "sent <n>/s"),
    (re.compile(r"psql -h \S+ "), "psql -h <socket> "),
    (re.compile(r"/console/invite/\S+"), "/console/invite/<token>"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
    (re.compile(r"\d+\.\d (?:kB|MB|GB)"), "<size>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}"), "<date>"),
]


def normal(text: str) -> str:
    for pattern, replacement in _NORMAL:
        text = pattern.sub(replacement, text)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


# --- a newcomer's directory -------------------------------------------------------------------


class Newcomer:
    """A directory with the project's `.venv` and `make run` running in it; shell blocks run
    in one bash session whose exported variables carry over from block to block."""

    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.port = port
        (home / ".venv").symlink_to(Path(sys.prefix))
        self._state = home / ".shell-state"
        self._state.write_text("")
        pg_bin = binaries()  # the bundled psql, when the machine has none
        self.env = {
            "PATH": f"{os.environ['PATH']}:{pg_bin}",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "LOYALTYD_LOG_FORMAT": "json",
        }

    def sh(self, script: str, stdin: str = "") -> str:
        script = script.replace("127.0.0.1:8080", f"127.0.0.1:{self.port}")
        wrapped = f"set -euo pipefail\nsource {self._state}\n{script}\nexport -p > {self._state}\n"
        done = subprocess.run(
            ["bash", "-c", wrapped],
            cwd=self.home,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- {done.stderr}"
        return done.stdout

    def sql(self, statements: str) -> str:
        return self.sh("psql -X -q -v ON_ERROR_STOP=1", stdin=statements)

    def settled(self, timeout: float = 30) -> None:
        """Give the daemon a moment, as a person would: no campaign or sync left to do."""
        query = (
            "SELECT (SELECT count(*) FROM push_campaigns WHERE status IN ('PENDING', "
            "'PROCESSING')) + (SELECT count(*) FROM loyaltyd.pass_syncs WHERE state IN "
            "('pending', 'claimed'))"
        )
        deadline = time.monotonic() + timeout
        while self.sh(f'psql -X -At -c "{query}"').strip() != "0":
            assert time.monotonic() < deadline, "the daemon did not finish within 30 s"
            time.sleep(0.2)


@pytest.fixture
def newcomer(tmp_path: Path) -> Iterator[tuple[Newcomer, str]]:
    """`make run` in a fresh directory, and the block it printed once ready."""
    port = free_port()
    you = Newcomer(tmp_path, port)
    with (
        (tmp_path / "run.log").open("w") as log,
        subprocess.Popen(
            [".venv/bin/loyaltyd", "run"],
            cwd=tmp_path,
            env=you.env | {"LOYALTYD_HTTP_PORT": str(port)},
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        ) as run,
    ):
        try:
            yield you, _printed_block(run)
        finally:
            run.terminate()
            run.wait(timeout=30)


def _printed_block(run: subprocess.Popen[str]) -> str:
    assert run.stdout is not None
    lines: list[str] = []
    while not lines or not lines[-1].lstrip().startswith("stop"):
        line = run.stdout.readline()
        assert line, f"`loyaltyd run` stopped before it was ready: {lines}"
        lines.append(line)
    return "".join(lines)


def test_the_readme_works_as_pasted(newcomer: tuple[Newcomer, str]) -> None:
    you, printed = newcomer
    text = README.read_text()
    shown = re.search(r"```text\n(loyaltyd is running on this machine\..*?)\n```", text, re.S)
    assert shown is not None, "the README shows what `make run` prints"
    assert normal(printed) == normal(shown.group(1))

    for block in readme_blocks(text):
        if block.skipped:
            continue
        if "loyaltyd status" in block.body:
            you.settled()
        out = you.sql(block.body) if block.lang == "sql" else you.sh(block.body)
        if block.output is not None:
            assert normal(out) == normal(block.output), out
        if "console invite" in block.body:
            # The console `make run` serves: no "console is off", the link on its port.
            assert "console is off" not in out, out
            assert re.search(r"http://127\.0\.0\.1:\d+/console/invite/\S+$", out.strip()), out

    _the_http_examples_did_what_they_say(you)


def _the_http_examples_did_what_they_say(you: Newcomer) -> None:
    you.settled()
    rows = you.sql(
        "\\pset format unaligned\n\\pset tuples_only on\n"
        "SELECT name, status, segment, recipient_count, sent_count FROM push_campaigns "
        "ORDER BY created_at;\n"
    ).splitlines()
    assert rows == [
        "Weekend double points|COMPLETED|ALL|3|3",
        "Whale night|DRAFT|WHALE|1|0",
        "|COMPLETED|ALL|3|3",  # the broadcast through the API
    ], rows
    logs = [json.loads(line) for line in (you.home / "run.log").read_text().splitlines()]
    assert any(e.get("event") == "birthday_tick_finished" for e in logs)
