-- Operations: what /readyz, the watchdog, /metrics and `loyaltyd status` read. Read-only, and
-- cheap enough to run on every scrape: each branch reads a partial index's rows only.

-- name: ops_ping
-- No parameters. The database answers at all (readiness, watchdog).
SELECT 1;

-- name: ops_queue_depths
-- No parameters. Rows not finished yet, by queue ('sync', 'campaign') and state, with the age
-- in seconds of the oldest: a pass sync's age runs from its enqueue, a delivery's from its
-- campaign's start (deliveries are all written when it starts). Dead syncs are counted too.
WITH syncs AS (
    -- one branch per state, so each reads its own partial index
    SELECT 'pending' AS state, count(*) AS rows, min(enqueued_at) AS oldest
      FROM loyaltyd.pass_syncs WHERE state = 'pending'
    UNION ALL
    SELECT 'claimed', count(*), min(enqueued_at) FROM loyaltyd.pass_syncs WHERE state = 'claimed'
    UNION ALL
    SELECT 'dead', count(*), min(enqueued_at) FROM loyaltyd.pass_syncs WHERE state = 'dead'
),
deliveries AS (
    -- per campaign first: a million-recipient campaign is one group, then one join
    SELECT campaign_id, state, count(*) AS rows
      FROM loyaltyd.campaign_deliveries
     WHERE state IN ('pending', 'claimed')
     GROUP BY campaign_id, state
),
depths AS (
    SELECT 'sync' AS queue, state, rows,
           coalesce(extract(epoch FROM now() - oldest), 0)::float8 AS oldest_age
      FROM syncs
    UNION ALL
    SELECT 'campaign', s.state, coalesce(sum(d.rows), 0)::bigint,
           coalesce(extract(epoch FROM now() - min(coalesce(c.started_at, c.created_at))),
                    0)::float8
      FROM (VALUES ('pending'), ('claimed')) AS s (state)
      LEFT JOIN deliveries d ON d.state = s.state
      LEFT JOIN push_campaigns c ON c.id = d.campaign_id
     GROUP BY s.state
)
SELECT queue, state, rows, oldest_age
  FROM depths
 ORDER BY queue DESC, array_position(ARRAY['pending', 'claimed', 'dead'], state);

-- name: ops_sync_queue_gauges
-- No parameters. Pass syncs owed (pending or in flight), the age in seconds of the oldest,
-- and the dead ones, for the /metrics gauges: partial-index reads, cheap enough for every
-- scrape.
SELECT count(*) AS rows,
       coalesce(extract(epoch FROM now() - min(enqueued_at)), 0)::float8 AS oldest_age,
       (SELECT count(*) FROM loyaltyd.pass_syncs WHERE state = 'dead') AS dead
  FROM (SELECT enqueued_at FROM loyaltyd.pass_syncs WHERE state = 'pending'
        UNION ALL
        SELECT enqueued_at FROM loyaltyd.pass_syncs WHERE state = 'claimed') AS owed;

-- name: ops_work_by_program
-- No parameters. Work owed per program and queue ('sync', 'campaign'): rows pending or in
-- flight, and the age in seconds of the oldest (a delivery's from its campaign's start).
WITH deliveries AS (
    SELECT campaign_id, count(*) AS rows
      FROM loyaltyd.campaign_deliveries
     WHERE state IN ('pending', 'claimed')
     GROUP BY campaign_id
),
work AS (
    SELECT c.program_id, 'campaign' AS queue, sum(d.rows)::bigint AS rows,
           extract(epoch FROM now() - min(coalesce(c.started_at, c.created_at)))::float8
               AS oldest_age
      FROM deliveries d
      JOIN push_campaigns c ON c.id = d.campaign_id
     GROUP BY c.program_id
    UNION ALL
    SELECT program_id, 'sync', count(*),
           extract(epoch FROM now() - min(enqueued_at))::float8
      FROM (-- one branch per state, so each reads its own partial index
            SELECT program_id, enqueued_at FROM loyaltyd.pass_syncs WHERE state = 'pending'
            UNION ALL
            SELECT program_id, enqueued_at FROM loyaltyd.pass_syncs WHERE state = 'claimed') s
     GROUP BY program_id
)
SELECT w.program_id, p.name AS program_name, w.queue, w.rows, w.oldest_age
  FROM work w
  LEFT JOIN programs p ON p.id = w.program_id
 ORDER BY w.rows DESC, w.queue;

-- name: ops_dead_syncs
-- $1 = how many. The most recently failed dead pass syncs and why, newest first.
SELECT s.pass_id, s.program_id, pr.name AS program_name, p.external_id, s.attempts,
       s.last_error, s.updated_at
  FROM loyaltyd.pass_syncs s
  LEFT JOIN passes_master p ON p.id = s.pass_id
  LEFT JOIN programs pr ON pr.id = s.program_id
 WHERE s.state = 'dead'
 ORDER BY s.updated_at DESC
 LIMIT $1;

-- name: ops_recent_campaigns
-- $1 = how many. Campaigns still to finish first (oldest first), then the most recent others.
SELECT g.*, pr.name AS program_name
  FROM push_campaign_progress g
  LEFT JOIN programs pr ON pr.id = g.program_id
 ORDER BY (g.status IN ('PENDING', 'PROCESSING')) DESC,
          CASE WHEN g.status IN ('PENDING', 'PROCESSING') THEN g.created_at END ASC,
          g.created_at DESC
 LIMIT $1;

-- name: ops_birthdays_today
-- No parameters. Per program with the bot enabled or with a gift today: its local date and
-- the gifts logged for it (with how many carried the message). A timezone Postgres does not
-- know falls back to UTC here and is flagged, because the birthday bot refuses it.
WITH local AS (
    SELECT pr.id, pr.name, pr.timezone, pr.birthday_bot_enabled,
           tz.name IS NOT NULL AS timezone_known,
           (now() AT TIME ZONE coalesce(tz.name, 'UTC'))::date AS local_date
      FROM programs pr
      LEFT JOIN pg_timezone_names tz ON tz.name = pr.timezone
)
SELECT l.id AS program_id, l.name AS program_name, l.timezone, l.timezone_known,
       l.birthday_bot_enabled, l.local_date,
       count(b.id) AS gifted,
       count(t.notification_message) AS messaged
  FROM local l
  LEFT JOIN birthday_logs b ON b.program_id = l.id AND b.celebrated_on = l.local_date
  LEFT JOIN transactions t ON t.id = b.transaction_id
 GROUP BY l.id, l.name, l.timezone, l.timezone_known, l.birthday_bot_enabled, l.local_date
HAVING l.birthday_bot_enabled OR count(b.id) > 0
 ORDER BY l.name, l.id;

-- name: ops_retrying
-- No parameters. Per queue ('sync', 'campaign'): rows waiting for another try after a
-- transient failure (a failed attempt left its error), of those how many wait for PassKit to
-- answer again at all (due 'infinity': held back while PassKit was down), seconds until the
-- soonest of the others is due again, and the newest of those errors. Many rows here while
-- PassKit is failing is the outage seen from the database, by every daemon on it.
SELECT 'sync' AS queue, count(*) AS rows,
       count(*) FILTER (WHERE available_at = 'infinity') AS held,
       coalesce(extract(epoch FROM min(available_at) FILTER (WHERE available_at < 'infinity')
                                   - now()), 0)::float8 AS next_in,
       (array_agg(last_error ORDER BY updated_at DESC))[1] AS latest_error
  FROM loyaltyd.pass_syncs
 WHERE state = 'pending' AND last_error IS NOT NULL
UNION ALL
SELECT 'campaign', count(*),
       count(*) FILTER (WHERE available_at = 'infinity'),
       coalesce(extract(epoch FROM min(available_at) FILTER (WHERE available_at < 'infinity')
                                   - now()), 0)::float8,
       (array_agg(error ORDER BY available_at DESC))[1]
  FROM loyaltyd.campaign_deliveries
 WHERE state = 'pending' AND error IS NOT NULL;

-- name: campaign_retry_waits
-- $1 = campaign ids. Per campaign with any: its recipients waiting for another try after a
-- transient failure, how many of them wait for PassKit to answer at all (due 'infinity'),
-- seconds until the soonest of the others is due again, and the newest error.
SELECT campaign_id, count(*) AS waiting,
       count(*) FILTER (WHERE available_at = 'infinity') AS held,
       greatest(coalesce(extract(epoch FROM min(available_at) FILTER (WHERE available_at < 'infinity')
                                        - now()), 0), 0)::float8 AS next_in,
       (array_agg(error ORDER BY available_at DESC))[1] AS latest_error
  FROM loyaltyd.campaign_deliveries
 WHERE campaign_id = ANY($1::uuid[]) AND state = 'pending' AND error IS NOT NULL
 GROUP BY campaign_id;

-- name: instance_heartbeat
-- This daemon's beat: its PassKit account (a hash), PASSKIT_RATE_LIMIT, the requests/s it
-- wants, the share it claims, the requests/s sent since the last beat, the rows it took over so
-- far; stale_seconds is LOYALTYD_STALE_SECONDS. Writes its row (created on the first beat) and
-- returns the other live daemons budgeting the same account: the statement's snapshot shows
-- every beat committed before it.
WITH beat AS (
    INSERT INTO loyaltyd.instances AS i
           (id, host, pid, account, rate_limit, want, share, sent_per_second, taken_over)
    VALUES ($id, $host, $pid, $account, $rate_limit, $want, $share, $sent_per_second,
            $taken_over)
    ON CONFLICT (id) DO UPDATE
       SET heartbeat_at = now(), account = EXCLUDED.account, rate_limit = EXCLUDED.rate_limit,
           want = EXCLUDED.want, share = EXCLUDED.share,
           sent_per_second = EXCLUDED.sent_per_second, taken_over = EXCLUDED.taken_over
)
SELECT want, share, rate_limit
  FROM loyaltyd.instances
 WHERE id <> $id AND account = $account AND rate_limit > 0
   AND heartbeat_at > now() - make_interval(secs => $stale_seconds);

-- name: instance_share
-- $1 = this daemon's id, $2 = its share. A cut published at once, for the others to use.
UPDATE loyaltyd.instances SET share = $2 WHERE id = $1;

-- name: instance_ready
-- $1 = this daemon's id. Its workers run: from now on it is listed, and a failure leaves its row.
UPDATE loyaltyd.instances SET ready_at = now() WHERE id = $1;

-- name: instance_leave
-- $1 = this daemon's id. A clean stop (or a start that failed before it was ready): nothing of
-- it is left to take over.
DELETE FROM loyaltyd.instances WHERE id = $1;

-- name: instances_forget
-- $1 = seconds. Rows of daemons dead for longer than that (their work was taken over long ago).
DELETE FROM loyaltyd.instances WHERE heartbeat_at < now() - make_interval(secs => $1);

-- name: ops_instances
-- $1 = seconds a dead daemon stays listed (LOYALTYD_STATUS_DEAD_HOURS). The daemons on this
-- database that were ready at some point, the newest heartbeat first, with its age.
SELECT id, host, pid, started_at,
       extract(epoch FROM now() - heartbeat_at)::float8 AS heartbeat_age,
       rate_limit, share, sent_per_second, taken_over
  FROM loyaltyd.instances
 WHERE ready_at IS NOT NULL AND heartbeat_at > now() - make_interval(secs => $1)
 ORDER BY heartbeat_at DESC;

-- name: release_held_work
-- No parameters. PassKit answers again: every row that waited for it (due 'infinity', written
-- while PassKit was down as a whole) is due now, and every daemon's workers are rung. Pass
-- syncs and webhook re-reads first in the claims' own order (they are claimed before campaign
-- sends for PassKit's slots). Returns the rows released per queue.
WITH syncs AS (
    UPDATE loyaltyd.pass_syncs SET available_at = now(), updated_at = now()
     WHERE state = 'pending' AND available_at = 'infinity'
    RETURNING 1
),
deliveries AS (
    UPDATE loyaltyd.campaign_deliveries d SET available_at = now()
     WHERE d.state = 'pending' AND d.available_at = 'infinity'
       AND d.campaign_id IN (SELECT c.id FROM push_campaigns c
                              WHERE c.started_at IS NOT NULL AND c.finished_at IS NULL)
    RETURNING 1
),
reads AS (
    UPDATE loyaltyd.wallet_events SET available_at = now()
     WHERE state = 'pending' AND available_at = 'infinity'
    RETURNING 1
),
released AS (
    SELECT (SELECT count(*) FROM syncs)::int AS syncs,
           (SELECT count(*) FROM deliveries)::int AS deliveries,
           (SELECT count(*) FROM reads)::int AS reads
)
SELECT r.*,
       CASE WHEN r.syncs > 0 THEN pg_notify('loyaltyd_syncs', '')::text END,
       CASE WHEN r.deliveries > 0 THEN pg_notify('loyaltyd_deliveries', '')::text END,
       CASE WHEN r.deliveries > 0 THEN pg_notify('loyaltyd_campaign_messages', '')::text END,
       CASE WHEN r.reads > 0 THEN pg_notify('loyaltyd_wallet_events', '')::text END
  FROM released r;

