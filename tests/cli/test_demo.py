"""The README's "try it" command: `loyaltyd demo` on its own embedded Postgres finishes and
prints its summary."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_and_prints_its_summary() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "PASSKIT_", "LOYALTYD_"))
    }
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "demo", "--members", "600"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "PassKit now shows" in out
    assert "PassKit marked the coupon redeemed" in out
    # every installed pass of the program: the 600 members' cards and one coupon
    assert "COMPLETED: 601 phones buzzed" in out
    assert "members born today got 50 points" in out and "a second run gifted 0" in out
    assert "Summary" in out and "demo finished in" in out
    assert "each 503 (PassKit busy) was tried again" in out
    # Nothing but the tour: no warning of the daemon's in the middle of it.
    assert '"level": "warning"' not in out + done.stderr, out + done.stderr
    assert "[warning" not in out + done.stderr, out + done.stderr


def test_the_demo_says_when_a_campaign_waits_on_retries() -> None:
    """With PassKit busy 15 % of the time, some sends wait out a back-off: the demo says
    how many, after what, and when the next try is due."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "PASSKIT_", "LOYALTYD_"))
    }
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "demo", "--members", "200", "--passkit-503", "15"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "waiting to retry after PassKit 503" in done.stdout, done.stdout
