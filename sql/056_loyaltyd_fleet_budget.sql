-- One PassKit rate limit for the whole fleet. Each daemon publishes, with its heartbeat, the
-- account it sends to (a hash of the key, never the key), the limit it was configured with,
-- how much of it it wants and the share it may use; every daemon splits the limit among the
-- live daemons of its account from these rows (daemon/passkit/budget.py). Also shown by
-- `loyaltyd status` and /metrics: what each daemon sent and how many rows it took over.

ALTER TABLE loyaltyd.instances
    ADD COLUMN IF NOT EXISTS account text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS rate_limit float8 NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS want float8 NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS share float8 NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS sent_per_second float8 NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS taken_over bigint NOT NULL DEFAULT 0;

COMMENT ON COLUMN loyaltyd.instances.share IS
    'Requests per second of the account''s PASSKIT_RATE_LIMIT this daemon may use.';
