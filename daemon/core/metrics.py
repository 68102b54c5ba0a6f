"""Prometheus instruments, owned by one object passed down from the composition root.

A registry per `Metrics` (not the global default) keeps tests and several in-process
daemons from sharing counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.passkit_requests = Counter(
            "loyaltyd_passkit_requests",
            "PassKit HTTP requests by operation and outcome (ok, transient, permanent, mock).",
            ["operation", "outcome"],
            registry=r,
        )
        self.passkit_latency = Histogram(
            "loyaltyd_passkit_request_seconds",
            "PassKit request latency.",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.passkit_retries = Counter(
            "loyaltyd_passkit_retries",
            "PassKit retries by reason.",
            ["operation", "reason"],
            registry=r,
        )
        self.ratelimit_wait = Histogram(
            "loyaltyd_ratelimit_wait_seconds",
            "Time spent waiting for a rate-limiter token.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.history_removed = Counter(
            "loyaltyd_history_removed",
            "Rows of old history removed by the retention rule, by table.",
            ["table"],
            registry=r,
        )
        self.deliveries = Counter(
            "loyaltyd_deliveries",
            "Finished units of work by kind (sync, campaign) and outcome (sent, failed, "
            "skipped, retry).",
            ["kind", "outcome"],
            registry=r,
        )
        self.passkit_up = Gauge(
            "loyaltyd_passkit_up",
            "0 while every recent PassKit request failed transiently (PassKit down or "
            "unreachable), 1 otherwise.",
            registry=r,
        )
        self.passkit_up.set(1)
        self.listener_reconnects = Counter(
            "loyaltyd_listener_reconnects", "LISTEN connection (re)connects.", registry=r
        )
        self.listener_up = Gauge(
            "loyaltyd_listener_up", "1 while the LISTEN connection is alive.", registry=r
        )
        self.leases_expired = Counter(
            "loyaltyd_leases_reclaimed",
            "Rows claimed whose previous lease had expired (another daemon died).",
            ["queue"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "loyaltyd_queue_depth", "Pending rows by queue.", ["queue"], registry=r
        )
        self.dead_syncs = Gauge(
            "loyaltyd_dead_syncs",
            "Pass syncs given up (permanent PassKit refusal, or transient failures past "
            "LOYALTYD_RETRY_MAX_AGE_SECONDS), awaiting "
            "`loyaltyd requeue-dead`.",
            registry=r,
        )
        self.queue_oldest_age = Gauge(
            "loyaltyd_queue_oldest_age_seconds",
            "Age of the oldest pending row.",
            ["queue"],
            registry=r,
        )
        # The fleet and the work per program, read from the database at each scrape (every
        # daemon on one database reports the same); the labels are cleared each time, so a
        # daemon that left or a program with nothing owed drops out.
        self.fleet_heartbeat_age = Gauge(
            "loyaltyd_fleet_heartbeat_age_seconds",
            "Age of each daemon's last heartbeat (loyaltyd.instances).",
            ["instance", "host"],
            registry=r,
        )
        self.fleet_budget_share = Gauge(
            "loyaltyd_fleet_budget_share",
            "Requests per second of the account's PASSKIT_RATE_LIMIT each daemon may use.",
            ["instance", "host"],
            registry=r,
        )
        self.fleet_sent_per_second = Gauge(
            "loyaltyd_fleet_sent_per_second",
            "PassKit requests per second each daemon sent over its last heartbeat.",
            ["instance", "host"],
            registry=r,
        )
        self.fleet_taken_over = Gauge(
            "loyaltyd_fleet_rows_taken_over",
            "Rows each live daemon took over from dead daemons since it started.",
            ["instance", "host"],
            registry=r,
        )
        self.program_work = Gauge(
            "loyaltyd_program_queue_depth",
            "Rows owed to PassKit (pending or in flight), by program and queue.",
            ["program", "queue"],
            registry=r,
        )
        self.program_oldest_age = Gauge(
            "loyaltyd_program_queue_oldest_age_seconds",
            "Age of the oldest row owed, by program and queue.",
            ["program", "queue"],
            registry=r,
        )
        # Wallet truth (daemon.wallet): what PassKit says of the passes, per program.
        self.wallet_passes = Gauge(
            "loyaltyd_wallet_passes",
            "Passes by program and passes_master.status (what PassKit says, where the program "
            "follows it).",
            ["program", "status"],
            registry=r,
        )
        self.wallet_drift = Counter(
            "loyaltyd_wallet_balance_drift",
            "Balances PassKit showed that differ from the ledger, by how they were found "
            "(sweep, points_set, tier_points_set) and what became of them (repaired, reported, "
            "deferred, seen).",
            ["source", "outcome"],
            registry=r,
        )
        self.wallet_webhooks = Counter(
            "loyaltyd_wallet_webhooks",
            "PassKit webhooks received by this daemon, by event (and refused ones).",
            ["event"],
            registry=r,
        )
        self.wallet_sweep_ok = Gauge(
            "loyaltyd_wallet_sweep_ok",
            "1 when each program class's last sweep completed, 0 when it failed.",
            ["program", "protocol"],
            registry=r,
        )
        self.wallet_sweep_drift = Gauge(
            "loyaltyd_wallet_sweep_drift",
            "Balances the last completed sweep of each program found different, and what became "
            "of them (found, repaired, reported).",
            ["program", "outcome"],
            registry=r,
        )
        self.wallet_webhooks_received = Gauge(
            "loyaltyd_wallet_webhooks_received",
            "PassKit webhooks received by every daemon, per program and event (the database's "
            "count).",
            ["program", "event"],
            registry=r,
        )
        self.wallet_sweep_age = Gauge(
            "loyaltyd_wallet_sweep_age_seconds",
            "Seconds since each program's last completed sweep of PassKit's lists.",
            ["program"],
            registry=r,
        )
        self.wallet_inbox_depth = Gauge(
            "loyaltyd_wallet_inbox_depth",
            "Passes a webhook named that wait to be re-read from PassKit.",
            registry=r,
        )
        self.console_feed_reads = Counter(
            "loyaltyd_console_feed_reads",
            "Reads of campaign progress by the console's live feed (one a second at most while "
            "someone watches, whatever the number of viewers).",
            registry=r,
        )
        self.console_watchers = Gauge(
            "loyaltyd_console_watchers", "Console pages watching live on this daemon.", registry=r
        )
