"""PassKit client throughput against the fake PassKit (SPEC §5).

    python -m bench.bench_passkit --calls 5000 --concurrency 50 --median-ms 50

Three runs through one real-mode client (JWT signed with a fake key and secret):
1. unlimited: `--calls` write_message calls, a new task started whenever one finishes, so
   `--concurrency` are always in flight. Target: >= 90 % of the ceiling
   `concurrency / mean latency`, the mean being what the fake actually waited.
2. rate-limited: PASSKIT_RATE_LIMIT = `--rate-limit`. Target: 95-100 % of the limit, and no
   one-second window at the fake above limit + burst.
3. the seeds' loop (batches of 50, then sleep 200 ms), for comparison. Target: run 1 is at
   least 3x faster.

Exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from bench._common import Verdict, print_table, print_verdicts
from daemon.core.config import Settings
from daemon.core.logs import configure_logging
from daemon.core.metrics import Metrics
from daemon.passkit.client import PassKitClient
from daemon.testing.fakepasskit import FakePassKit, LatencyModel, issued_ids

API_KEY = "bench-api-key"
API_SECRET = "bench-api-secret-long-enough-for-hs256-keys"
SEED_BATCH = 50
SEED_PAUSE_SECONDS = 0.2

Call = Callable[[int], Coroutine[Any, Any, str]]


@dataclass(frozen=True)
class RunResult:
    name: str
    calls: int
    elapsed: float
    fake_mean_latency: float
    max_per_second: int

    @property
    def achieved(self) -> float:
        return self.calls / self.elapsed


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--median-ms", type=float, default=50.0)
    parser.add_argument("--p99-ms", type=float, default=None, help="default: 3x the median")
    parser.add_argument("--rate-limit", type=float, default=200.0, help="0 skips run 2")
    parser.add_argument("--burst", type=int, default=5)
    parser.add_argument("--limit-calls", type=int, default=None, help="default: 10 s worth")
    parser.add_argument("--seed-calls", type=int, default=1000, help="0 skips run 3")
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args()


def settings_for(url: str, concurrency: int, rate: float, burst: int) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        passkit_api_key=SecretStr(API_KEY),
        passkit_api_secret=SecretStr(API_SECRET),
        passkit_base_url=url,
        passkit_max_concurrency=concurrency,
        passkit_rate_limit=rate,
        passkit_rate_burst=burst,
        passkit_timeout_seconds=30.0,
    )


def max_in_one_second(times: list[float]) -> int:
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + 1.0) - i for i, t in enumerate(ordered)), default=0)


async def feed(calls: int, concurrency: int, call: Call) -> None:
    """Start a task per call whenever a slot frees, `concurrency` in flight."""
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[str]] = set()

    def done(task: asyncio.Task[str]) -> None:
        tasks.discard(task)
        slots.release()

    for n in range(calls):
        await slots.acquire()
        task = asyncio.create_task(call(n))
        tasks.add(task)
        task.add_done_callback(done)
    while tasks:
        await asyncio.gather(*tasks)


async def seed_loop(calls: int, call: Call) -> None:
    """The seeds' campaign loop: 50 at once, wait for all, sleep 200 ms."""
    for start in range(0, calls, SEED_BATCH):
        await asyncio.gather(*(call(n) for n in range(start, min(start + SEED_BATCH, calls))))
        await asyncio.sleep(SEED_PAUSE_SECONDS)


async def run(
    name: str,
    fake: FakePassKit,
    settings: Settings,
    drive: Callable[[Call], Awaitable[None]],
    calls: int,
) -> RunResult:
    fake.reset_requests()
    # With metrics, as the daemon runs it: their cost is part of the client's overhead.
    async with PassKitClient(settings, Metrics()) as client:

        async def call(n: int) -> str:
            return await client.write_message(
                "MEMBERSHIP", f"pass-{n}", "Double points this weekend!"
            )

        await call(-1)  # connection warm-up and first JWT, outside the measurement
        fake.reset_requests()
        started = time.perf_counter()
        await drive(call)
        elapsed = time.perf_counter() - started
    assert fake.count() == calls, f"{name}: fake saw {fake.count()} requests, expected {calls}"
    return RunResult(
        name, calls, elapsed, fake.mean_latency(), max_in_one_second([r.at for r in fake.requests])
    )


async def main() -> int:
    args = parse_args()
    configure_logging("WARNING", "console")
    p99 = args.p99_ms if args.p99_ms is not None else 3 * args.median_ms
    latency = LatencyModel(median_ms=args.median_ms, p99_ms=p99)
    fake = FakePassKit(
        API_KEY,
        API_SECRET,
        issued=issued_ids(""),  # every member the bench seeded is issued
        latency=latency,
        seed=args.seed,
        record_bodies=False,
    )
    url = await fake.start()
    try:
        results, verdicts = await run_all(args, fake, url)
    finally:
        await fake.stop()
    report(args, latency, results, verdicts)
    return 0 if all(v.ok for v in verdicts) else 1


async def run_all(
    args: argparse.Namespace, fake: FakePassKit, url: str
) -> tuple[list[RunResult], list[Verdict]]:
    conc = args.concurrency
    unlimited = await run(
        "unlimited",
        fake,
        settings_for(url, conc, 0, args.burst),
        lambda call: feed(args.calls, conc, call),
        args.calls,
    )
    ceiling = conc / unlimited.fake_mean_latency
    results = [unlimited]
    verdicts = [Verdict("unlimited: % of ceiling", 100 * unlimited.achieved / ceiling, 90.0)]
    if args.rate_limit > 0:
        calls = args.limit_calls or int(args.rate_limit * 10)
        limited = await run(
            "rate-limited",
            fake,
            settings_for(url, conc, args.rate_limit, args.burst),
            lambda call: feed(calls, conc, call),
            calls,
        )
        results.append(limited)
        verdicts.append(
            Verdict(
                "rate-limited: % of limit", 100 * limited.achieved / args.rate_limit, 95.0, 100.0
            )
        )
        verdicts.append(
            Verdict(
                "rate-limited: max req in any 1 s",
                limited.max_per_second,
                0,
                args.rate_limit + args.burst,
            )
        )
    if args.seed_calls > 0:
        seeds = await run(
            "seed loop",
            fake,
            settings_for(url, conc, 0, args.burst),
            lambda call: seed_loop(args.seed_calls, call),
            args.seed_calls,
        )
        results.append(seeds)
        verdicts.append(
            Verdict("unlimited / seed loop (x)", unlimited.achieved / seeds.achieved, 3.0)
        )
    return results, verdicts


def report(
    args: argparse.Namespace,
    latency: LatencyModel,
    results: list[RunResult],
    verdicts: list[Verdict],
) -> None:
    print(
        f"\nfake PassKit: lognormal latency, median {latency.median_ms:g} ms, "
        f"p99 {latency.p99_ms:g} ms "
        f"(model mean {latency.mean_ms:.1f} ms); concurrency {args.concurrency}; "
        f"{os.cpu_count()} CPUs; client and fake in one process\n"
    )
    rows = [
        [
            "run",
            "calls",
            "elapsed s",
            "achieved req/s",
            "fake mean ms",
            "ceiling req/s",
            "max in 1 s",
        ]
    ]
    for r in results:
        rows.append(
            [
                r.name,
                str(r.calls),
                f"{r.elapsed:.2f}",
                f"{r.achieved:.1f}",
                f"{1000 * r.fake_mean_latency:.1f}",
                f"{args.concurrency / r.fake_mean_latency:.1f}",
                str(r.max_per_second),
            ]
        )
    print_table(rows)
    print()
    print_verdicts(verdicts)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
