-- Removal of old history (daemon.store.retention, run by daemon.history.retention).

-- name: retention_campaigns_due
-- $1 = seconds deliveries are kept after their campaign finished, $2 = at most this many.
-- Finished campaigns whose deliveries are due for removal, in the order they finished.
SELECT c.id, c.finished_at
  FROM public.push_campaigns c, loyaltyd.retention r
 WHERE r.name = 'campaign_deliveries'
   AND c.finished_at IS NOT NULL
   AND c.finished_at >= r.purged_through
   AND c.finished_at < now() - make_interval(secs => $1)
 ORDER BY c.finished_at
 LIMIT $2;

-- name: retention_remove_deliveries
-- $1 = campaign id, $2 = at most this many rows. One small batch of a finished campaign's
-- finished deliveries (never pending or claimed ones); how many were removed.
WITH batch AS (
    SELECT ctid FROM loyaltyd.campaign_deliveries
     WHERE campaign_id = $1 AND state IN ('sent', 'failed', 'skipped')
     LIMIT $2
),
removed AS (
    DELETE FROM loyaltyd.campaign_deliveries d USING batch
     WHERE d.ctid = batch.ctid AND d.state IN ('sent', 'failed', 'skipped')
    RETURNING 1
)
SELECT count(*)::int FROM removed;

-- name: retention_advance
-- $1 = table name, $2 = purged through (NULL: unchanged), $3 = rows just removed.
UPDATE loyaltyd.retention
   SET purged_through = greatest(purged_through, coalesce($2, purged_through)),
       last_run_at = now(),
       removed = removed + $3
 WHERE name = $1;

-- name: retention_remove_syncs
-- $1 = seconds an idle pass sync is kept, $2 = at most this many rows. One small batch of
-- idle pass syncs older than that (never pending, claimed or dead ones; a row a transaction
-- is writing right now is skipped, and a later transaction makes it anew).
WITH batch AS (
    SELECT pass_id FROM loyaltyd.pass_syncs
     WHERE state = 'idle' AND updated_at < now() - make_interval(secs => $1)
     ORDER BY updated_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
),
removed AS (
    DELETE FROM loyaltyd.pass_syncs s USING batch
     WHERE s.pass_id = batch.pass_id AND s.state = 'idle'
    RETURNING 1
)
SELECT count(*)::int FROM removed;

-- name: history_tables
-- No parameters. Per table loyaltyd keeps history in: rows (counted below 100,000, the
-- planner's estimate above: counting millions would make status slow), bytes on disk with
-- indexes, the oldest row kept, and the removal's progress.
SELECT 'campaign_deliveries' AS name,
       (SELECT CASE WHEN reltuples < 100000
                    THEN (SELECT count(*) FROM loyaltyd.campaign_deliveries)
                    ELSE reltuples::bigint END
          FROM pg_class WHERE oid = 'loyaltyd.campaign_deliveries'::regclass) AS rows,
       pg_total_relation_size('loyaltyd.campaign_deliveries') AS bytes,
       (SELECT min(c.started_at) FROM public.push_campaigns c
         WHERE c.started_at IS NOT NULL
           AND (c.finished_at IS NULL OR c.finished_at >= r.purged_through)) AS oldest,
       r.last_run_at, r.removed
  FROM loyaltyd.retention r WHERE r.name = 'campaign_deliveries'
UNION ALL
SELECT 'pass_syncs',
       (SELECT CASE WHEN reltuples < 100000
                    THEN (SELECT count(*) FROM loyaltyd.pass_syncs)
                    ELSE reltuples::bigint END
          FROM pg_class WHERE oid = 'loyaltyd.pass_syncs'::regclass),
       pg_total_relation_size('loyaltyd.pass_syncs'),
       least((SELECT min(updated_at) FROM loyaltyd.pass_syncs WHERE state = 'idle'),
             (SELECT min(updated_at) FROM loyaltyd.pass_syncs WHERE state = 'dead'),
             -- one read per state, so each reads its own partial index
             (SELECT min(enqueued_at) FROM loyaltyd.pass_syncs WHERE state = 'pending'),
             (SELECT min(enqueued_at) FROM loyaltyd.pass_syncs WHERE state = 'claimed')),
       r.last_run_at, r.removed
  FROM loyaltyd.retention r WHERE r.name = 'pass_syncs';
