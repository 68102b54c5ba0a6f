-- Wallet truth statements (loyaltyd.wallet_*: docs/schema.sql): sweeps of PassKit's lists, the
-- webhook inbox, and what PassKit said of a pass applied to passes_master.status. A sweep runs
-- on a connection of its own, which holds the program's advisory lock and the staging table
-- pg_temp.wallet_sweep_rows; nothing of a sweep is applied until its list has ended cleanly.

-- --- sweeps ------------------------------------------------------------------------------------

-- name: wallet_sweeps_due
-- $1 = the local hour of the daily sweep. The program classes PassKit can list (a program's
-- members, its coupon campaign, its production) whose last completed sweep started before the
-- latest local $1 o'clock (or that never had one), unless a sweep of it failed since and its
-- retry time has not come. One being swept right now is due too: its advisory lock keeps a
-- second sweep out, and a crashed daemon's lock is gone with it.
WITH classes AS (
    SELECT * FROM loyaltyd.wallet_program_classes
),
boundary AS (
    -- The latest local $1:00 that has passed, as a point in time.
    SELECT k.*, (CASE WHEN local_now >= today_at THEN today_at ELSE today_at - interval '1 day' END)
                AT TIME ZONE k.timezone AS since
      FROM classes k
     CROSS JOIN LATERAL (SELECT now() AT TIME ZONE k.timezone AS local_now,
                                date_trunc('day', now() AT TIME ZONE k.timezone)
                                    + make_interval(hours => $1) AS today_at) AS t
)
SELECT b.program_id, b.protocol, b.class_id, b.name
  FROM boundary b
 WHERE NOT EXISTS (SELECT 1 FROM loyaltyd.wallet_sweeps s
                    WHERE s.program_id = b.program_id AND s.protocol = b.protocol
                      AND s.state = 'completed' AND s.started_at >= b.since)
   -- a failed sweep is tried again at its retry time (a transient failure: minutes), or, when
   -- it failed for good, at the next daily hour
   AND NOT EXISTS (SELECT 1 FROM loyaltyd.wallet_sweeps s
                    WHERE s.program_id = b.program_id AND s.protocol = b.protocol
                      AND s.state = 'failed' AND s.started_at >= b.since
                      AND (s.retry_at IS NULL OR s.retry_at > now()))
 ORDER BY b.program_id, b.protocol;

-- name: wallet_sweep_classes
-- $1 = one program (NULL: every program). What `loyaltyd wallet-sync` sweeps: every class of
-- the program(s) that PassKit can list, due or not.
SELECT program_id, protocol, class_id, name
  FROM loyaltyd.wallet_program_classes
 WHERE ($1::uuid IS NULL OR program_id = $1)
 ORDER BY name, program_id, protocol;

-- name: wallet_sweep_lock
-- $1 = program id, $2 = protocol. Held by the sweep's connection while it runs (a session lock:
-- a crashed daemon's connection closes and lets it go).
SELECT pg_try_advisory_lock(hashtextextended('loyaltyd:wallet_sweep:' || $1::uuid || ':' || $2::text, 0));

-- name: wallet_sweep_start
-- $1 = program id, $2 = protocol, $3 = owner. Ends what an interrupted sweep left 'running' (its
-- lock is gone, or this one could not have been taken) and starts a new one.
WITH interrupted AS (
    UPDATE loyaltyd.wallet_sweeps
       SET state = 'failed', finished_at = now(), error = 'interrupted (its daemon stopped)'
     WHERE program_id = $1 AND protocol = $2 AND state = 'running'
)
INSERT INTO loyaltyd.wallet_sweeps (program_id, protocol, owner)
VALUES ($1, $2, $3)
RETURNING id, started_at;

-- name: wallet_sweep_staging
-- No parameters. The sweep's own table of what PassKit listed, on its connection only.
CREATE TEMP TABLE IF NOT EXISTS wallet_sweep_rows (
    passkit_id text NOT NULL,
    status text NOT NULL,
    first_installed_at timestamptz,
    last_installed_at timestamptz,
    first_uninstalled_at timestamptz,
    last_uninstalled_at timestamptz,
    invalidated_at timestamptz,
    passkit_updated_at timestamptz,
    points real,
    tier_points real
);

-- name: wallet_sweep_staging_ready
-- No parameters. Once the list is in: an index for the look-ups below, and statistics.
CREATE INDEX ON pg_temp.wallet_sweep_rows (passkit_id);
ANALYZE pg_temp.wallet_sweep_rows;

-- name: wallet_sweep_staging_drop
DROP TABLE IF EXISTS pg_temp.wallet_sweep_rows;

-- name: wallet_sweep_apply
-- $1 = program id, $2 = protocol, $3 = when the sweep started. What PassKit listed, applied in
-- one statement: wallet_passes gets every pass whose record changed, and passes_master.status
-- follows PassKit's where the program has not opted out. A pass a re-read wrote after the
-- sweep started keeps what the re-read said (it is newer). Returns the counts for the summary.
WITH listed AS MATERIALIZED (
    SELECT p.id AS pass_id, p.program_id, p.status AS master_status,
           g.wallet_status_from_passkit AS follows, w.status AS known_status, r.*,
           (w.updated_at IS NULL OR w.updated_at < $3) AS fresh,
           w.pass_id IS NULL
           OR (w.status, w.first_installed_at, w.last_installed_at, w.first_uninstalled_at,
               w.last_uninstalled_at, w.invalidated_at, w.passkit_updated_at, w.passkit_points,
               w.passkit_tier_points)
              IS DISTINCT FROM
              (r.status, r.first_installed_at, r.last_installed_at, r.first_uninstalled_at,
               r.last_uninstalled_at, r.invalidated_at, r.passkit_updated_at, r.points,
               r.tier_points)
               AS differs
      FROM (SELECT DISTINCT ON (passkit_id) * FROM pg_temp.wallet_sweep_rows
             ORDER BY passkit_id, passkit_updated_at DESC NULLS LAST) r  -- a record listed twice
      JOIN passes_master p ON p.passkit_internal_id = r.passkit_id
      JOIN programs g ON g.id = p.program_id
      LEFT JOIN loyaltyd.wallet_passes w ON w.pass_id = p.id
     WHERE p.program_id = $1 AND coalesce(p.protocol, 'MEMBERSHIP') = $2
),
written AS (
    INSERT INTO loyaltyd.wallet_passes AS w (
        pass_id, program_id, status, first_installed_at, last_installed_at,
        first_uninstalled_at, last_uninstalled_at, invalidated_at, passkit_updated_at,
        passkit_points, passkit_tier_points, updated_at, updated_by)
    SELECT pass_id, program_id, status, first_installed_at, last_installed_at,
           first_uninstalled_at, last_uninstalled_at, invalidated_at, passkit_updated_at,
           points, tier_points, now(), 'sweep'
      FROM listed WHERE fresh AND differs
    ON CONFLICT (pass_id) DO UPDATE
       SET status = excluded.status, first_installed_at = excluded.first_installed_at,
           last_installed_at = excluded.last_installed_at,
           first_uninstalled_at = excluded.first_uninstalled_at,
           last_uninstalled_at = excluded.last_uninstalled_at,
           invalidated_at = excluded.invalidated_at,
           passkit_updated_at = excluded.passkit_updated_at,
           passkit_points = excluded.passkit_points,
           passkit_tier_points = excluded.passkit_tier_points,
           updated_at = now(), updated_by = 'sweep'
     -- a re-read that committed meanwhile is newer than the list: it stays
     WHERE w.updated_at < $3
    RETURNING w.pass_id
),
moved AS (
    -- Also where only passes_master.status was off (set by hand in a program that follows
    -- PassKit): the list is the truth.
    UPDATE passes_master m
       SET status = l.status
      FROM listed l
     WHERE m.id = l.pass_id AND l.fresh AND l.follows AND m.status IS DISTINCT FROM l.status
    RETURNING m.id
),
news AS (
    -- What PassKit says that loyaltyd did not show: passes_master.status where the program
    -- follows PassKit, what PassKit last said where it does not.
    SELECT status FROM listed
     WHERE fresh
       AND status IS DISTINCT FROM CASE WHEN follows THEN master_status
                                        ELSE coalesce(known_status, master_status) END
)
SELECT (SELECT count(*) FROM pg_temp.wallet_sweep_rows)::int AS listed,
       (SELECT count(*) FROM listed)::int AS checked,
       (SELECT count(*) FROM written)::int AS written,
       (SELECT count(*) FROM moved)::int AS moved,
       (SELECT count(*) FROM news WHERE status = 'INSTALLED')::int AS installed,
       (SELECT count(*) FROM news WHERE status = 'UNINSTALLED')::int AS uninstalled,
       (SELECT count(*) FROM news WHERE status = 'INVALIDATED')::int AS invalidated,
       (SELECT count(*) FROM news WHERE status = 'ISSUED')::int AS issued;

-- name: wallet_sweep_reads_since
-- $1 = program id, $2 = when the sweep started. In the sweep's apply transaction, after
-- wallet_sweep_apply: what re-reads said since the sweep started is newer than its list, so
-- passes_master.status is theirs again wherever the apply moved it back.
UPDATE passes_master m
   SET status = w.status
  FROM loyaltyd.wallet_passes w JOIN programs g ON g.id = w.program_id
 WHERE w.pass_id = m.id AND w.program_id = $1 AND w.updated_by = 'read' AND w.updated_at >= $2
   AND g.wallet_status_from_passkit AND m.status IS DISTINCT FROM w.status;

-- name: wallet_sweep_missing
-- $1 = program id, $2 = protocol, $3 = at most this many. Passes of the class that PassKit's
-- list did not contain (and not already known deleted), and how many there are in all: each
-- is read back before it is called deleted.
SELECT p.passkit_internal_id, count(*) OVER ()::int AS total
  FROM passes_master p
  LEFT JOIN loyaltyd.wallet_passes w ON w.pass_id = p.id
 WHERE p.program_id = $1 AND coalesce(p.protocol, 'MEMBERSHIP') = $2
   AND p.passkit_internal_id IS NOT NULL
   AND w.status IS DISTINCT FROM 'DELETED'
   AND NOT EXISTS (SELECT 1 FROM pg_temp.wallet_sweep_rows r
                    WHERE r.passkit_id = p.passkit_internal_id)
 -- those checked longest ago first: over several sweeps every missing pass is read back
 ORDER BY w.updated_at NULLS FIRST, p.passkit_internal_id
 LIMIT $3;

-- name: wallet_sweep_drift
-- $1 = program id, $2 = at most this many repairs, $3 = when the sweep started. Balances PassKit
-- listed that differ from the ledger, compared as PassKit holds them (a float32), on passes that
-- owed PassKit nothing since before the list was read (a sync in flight will set the balance
-- anyway); tier points too where the program shows loyaltyd's (programs.passkit_tier_points,
-- sql/074). A drift is repaired by owing the pass its balance again (no message; the sync sets
-- the tier points with it), up to $2; one that comes back on a pass whose ledger has not moved
-- since its repair is reported once instead; one on a dead sync is reported (requeue-dead sends
-- it). Flags of passes that match again are cleared.
WITH drifted AS MATERIALIZED (
    SELECT p.id AS pass_id, p.program_id, m.points_balance AS balance, t.tier_points,
           s.state AS sync_state, w.drift_reported_at,
           coalesce(t.tier_points::real <> r.tier_points, false) AS tier_points_differ,
           (w.drift_repaired_at IS NOT NULL AND w.drift_repaired_points = m.points_balance
            AND w.drift_repaired_tier_points IS NOT DISTINCT FROM t.tier_points) AS recurring
      FROM (SELECT DISTINCT ON (passkit_id) * FROM pg_temp.wallet_sweep_rows
             ORDER BY passkit_id, passkit_updated_at DESC NULLS LAST) r
      JOIN passes_master p ON p.passkit_internal_id = r.passkit_id
      JOIN programs g ON g.id = p.program_id
      JOIN protocol_membership m ON m.pass_id = p.id
      CROSS JOIN LATERAL (SELECT CASE WHEN g.passkit_tier_points THEN m.tier_points END
                                     AS tier_points) t
      JOIN loyaltyd.wallet_passes w ON w.pass_id = p.id
      LEFT JOIN loyaltyd.pass_syncs s ON s.pass_id = p.id
     WHERE p.program_id = $1 AND coalesce(p.protocol, 'MEMBERSHIP') = 'MEMBERSHIP'
       AND r.points IS NOT NULL AND m.points_balance IS NOT NULL
       AND (m.points_balance::real <> r.points OR t.tier_points::real <> r.tier_points)
       AND w.status NOT IN ('DELETED', 'INVALIDATED')  -- owed nothing: its syncs are skipped
       AND (s.pass_id IS NULL OR s.state = 'dead' OR (s.state = 'idle' AND s.updated_at < $3))
),
to_repair AS (
    SELECT * FROM drifted WHERE NOT recurring AND sync_state IS DISTINCT FROM 'dead'
     ORDER BY pass_id LIMIT $2
),
repaired AS (
    -- Owed its balance again, as a transaction would owe it (the sync queue's doorbell rings).
    SELECT t.pass_id, t.balance, t.tier_points,
           loyaltyd.enqueue_pass_sync(t.pass_id, t.program_id, 'points', t.balance) AS queued
      FROM to_repair t
),
marked AS (
    UPDATE loyaltyd.wallet_passes w
       SET drift_repaired_at = now(), drift_repaired_points = r.balance,
           drift_repaired_tier_points = r.tier_points, drift_reported_at = NULL
      FROM repaired r
     WHERE w.pass_id = r.pass_id
    RETURNING w.pass_id
),
reported AS (
    UPDATE loyaltyd.wallet_passes w
       SET drift_reported_at = now()
      FROM drifted d
     WHERE w.pass_id = d.pass_id AND d.recurring AND d.drift_reported_at IS NULL
    RETURNING w.pass_id
),
cleared AS (
    UPDATE loyaltyd.wallet_passes w
       SET drift_repaired_at = NULL, drift_repaired_points = NULL,
           drift_repaired_tier_points = NULL, drift_reported_at = NULL
      FROM pg_temp.wallet_sweep_rows r
      JOIN passes_master p ON p.passkit_internal_id = r.passkit_id
      JOIN programs g ON g.id = p.program_id
      JOIN protocol_membership m ON m.pass_id = p.id
     WHERE w.pass_id = p.id AND p.program_id = $1 AND w.drift_repaired_at IS NOT NULL
       AND m.points_balance::real = r.points
       AND (NOT g.passkit_tier_points OR m.tier_points::real = r.tier_points)
)
SELECT (SELECT count(*) FROM drifted)::int AS found,
       (SELECT count(*) FROM drifted WHERE tier_points_differ)::int AS tier_points_found,
       (SELECT count(*) FROM marked)::int AS repaired,
       (SELECT count(*) FROM reported)::int AS reported,
       (SELECT count(*) FROM drifted WHERE recurring AND drift_reported_at IS NOT NULL)::int
           AS still_reported,
       (SELECT count(*) FROM drifted WHERE sync_state = 'dead')::int AS on_dead_syncs,
       greatest((SELECT count(*) FROM drifted WHERE NOT recurring
                   AND sync_state IS DISTINCT FROM 'dead')
                - (SELECT count(*) FROM to_repair), 0)::int AS deferred,
       (SELECT array_agg(pass_id) FROM reported) AS reported_passes;

-- name: wallet_sweep_finish
-- $1 = sweep id, $2 = 'completed' or 'failed', $3 = summary, $4 = error, $5 = seconds until a
-- failed sweep is tried again (NULL: at the next daily hour). Sweeps older than 30 days go.
WITH pruned AS (
    DELETE FROM loyaltyd.wallet_sweeps
     WHERE started_at < now() - interval '30 days' AND state <> 'running'
)
UPDATE loyaltyd.wallet_sweeps
   SET state = $2, finished_at = now(), summary = $3::jsonb, error = $4,
       retry_at = now() + make_interval(secs => $5)
 WHERE id = $1;

-- --- what PassKit said of one pass -------------------------------------------------------------

-- name: wallet_apply_read
-- A re-read's answer for one PassKit id (a 404 is DELETED; points and tier points are a
-- member's): written into wallet_passes and, where the program follows PassKit, into
-- passes_master.status. Returns each pass it moved, with its status before.
WITH passes AS (
    SELECT p.id AS pass_id, p.program_id, p.status AS was, g.wallet_status_from_passkit AS follows
      FROM passes_master p JOIN programs g ON g.id = p.program_id
     WHERE p.passkit_internal_id = $passkit_id AND coalesce(p.protocol, 'MEMBERSHIP') = $protocol
),
written AS (
    INSERT INTO loyaltyd.wallet_passes AS w (
        pass_id, program_id, status, first_installed_at, last_installed_at,
        first_uninstalled_at, last_uninstalled_at, invalidated_at, passkit_updated_at,
        passkit_points, passkit_tier_points, updated_at, updated_by)
    SELECT pass_id, program_id, $status, $first_installed_at, $last_installed_at,
           $first_uninstalled_at, $last_uninstalled_at, $invalidated_at, $passkit_updated_at,
           $points, $tier_points, now(), 'read'
      FROM passes
    ON CONFLICT (pass_id) DO UPDATE
       SET status = excluded.status,
           first_installed_at = coalesce(excluded.first_installed_at, w.first_installed_at),
           last_installed_at = coalesce(excluded.last_installed_at, w.last_installed_at),
           first_uninstalled_at = coalesce(excluded.first_uninstalled_at, w.first_uninstalled_at),
           last_uninstalled_at = coalesce(excluded.last_uninstalled_at, w.last_uninstalled_at),
           invalidated_at = coalesce(excluded.invalidated_at, w.invalidated_at),
           passkit_updated_at = coalesce(excluded.passkit_updated_at, w.passkit_updated_at),
           passkit_points = coalesce(excluded.passkit_points, w.passkit_points),
           passkit_tier_points = coalesce(excluded.passkit_tier_points, w.passkit_tier_points),
           updated_at = now(), updated_by = 'read'
),
moved AS (
    UPDATE passes_master m
       SET status = $status
      FROM passes x
     WHERE m.id = x.pass_id AND x.follows AND m.status IS DISTINCT FROM $status
    RETURNING m.id
)
SELECT x.pass_id, x.program_id, x.was, x.follows, x.pass_id IN (SELECT id FROM moved) AS moved
  FROM passes x;

-- --- the webhook inbox ---------------------------------------------------------------------------

-- name: wallet_event_receive
-- $1 = PassKit id, $2 = protocol, $3 = event, $4 = the pass's class (program, coupon campaign or
-- production id) as the webhook says it. Counts the event for its program (NULL: a pass and a
-- class loyaltyd does not know), and queues a re-read of a pass loyaltyd knows: at most one
-- waits per pass, so a flood of webhooks about one pass is one read. Rings the inbox workers.
WITH ours AS (
    SELECT p.program_id FROM passes_master p
     WHERE p.passkit_internal_id = $1 AND coalesce(p.protocol, 'MEMBERSHIP') = $2
     LIMIT 1
),
program AS (
    SELECT coalesce((SELECT program_id FROM ours),
                    (SELECT g.id FROM programs g
                      WHERE $4::text IN (g.passkit_program_id, g.passkit_coupon_campaign_id,
                                         g.passkit_production_id)
                      ORDER BY g.id LIMIT 1)) AS id
),
counted AS (
    INSERT INTO loyaltyd.wallet_event_counts AS c (program_id, event, received)
    SELECT id, $3, 1 FROM program
    ON CONFLICT (coalesce(program_id, '00000000-0000-0000-0000-000000000000'::uuid), event)
    DO UPDATE SET received = c.received + 1, last_received_at = now()
),
queued AS (
    INSERT INTO loyaltyd.wallet_events AS e (passkit_id, protocol, event)
    SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM ours)
    ON CONFLICT (passkit_id) WHERE state = 'pending'
    DO UPDATE SET events = e.events + 1, event = excluded.event
    RETURNING e.id
),
rung AS (
    SELECT pg_notify('loyaltyd_wallet_events', '') FROM queued
)
SELECT (SELECT id FROM program) AS program_id,
       (SELECT count(*) FROM queued) > 0 AS queued,
       (SELECT count(*) FROM rung) > 0 AS rung;

-- name: claim_wallet_events
-- $1 = owner, $2 = at most this many, $3 = lease length in seconds, $4 = seconds without a
-- heartbeat after which a daemon is dead. Due passes to re-read, oldest first, never one that
-- is being read already (the reads of one pass happen one after another, so the last one
-- applied is the newest); rows of a dead daemon are taken over.
WITH dead AS MATERIALIZED (
    SELECT loyaltyd.dead_daemons($4) AS owners  -- sql/070: the one rule
),
fresh AS (
    -- Waiting rows whose time has come (the pending partial index).
    SELECT e.id, false AS lease_expired, e.available_at
      FROM loyaltyd.wallet_events e
     WHERE e.state = 'pending' AND e.available_at <= now()
       AND NOT EXISTS (SELECT 1 FROM loyaltyd.wallet_events c
                        WHERE c.passkit_id = e.passkit_id AND c.state = 'claimed')
     ORDER BY e.available_at
     LIMIT $2
       FOR UPDATE OF e SKIP LOCKED
),
taken_over AS (
    -- Rows being read by a daemon that died (the claimed partial index).
    SELECT e.id, true AS lease_expired, e.available_at
      FROM loyaltyd.wallet_events e, dead
     WHERE e.state = 'claimed' AND loyaltyd.lease_lapsed(e.available_at, e.lease_owner, dead.owners)
     LIMIT $2
       FOR UPDATE OF e SKIP LOCKED
),
due AS (
    SELECT * FROM taken_over UNION ALL SELECT * FROM fresh
)
UPDATE loyaltyd.wallet_events e
   SET state = 'claimed', lease_owner = $1, attempts = e.attempts + 1,
       available_at = now() + make_interval(secs => $3)
  FROM (SELECT * FROM due ORDER BY lease_expired DESC, available_at LIMIT $2) due
 WHERE e.id = due.id
RETURNING e.id, e.passkit_id, e.protocol, e.event, e.attempts, due.lease_expired,
          extract(epoch FROM now() - e.received_at)::float8 AS owed_seconds;

-- name: record_wallet_events
-- $1 = owner; $2 ids, $3 outcomes ('sent'|'skipped'|'failed'|'retry'), $4 seconds until the retry
-- (Infinity: until PassKit answers again). A finished row leaves the inbox; a retry waits again,
-- or folds into a newer row of the same pass that arrived meanwhile. Only the holder writes.
WITH r AS (
    SELECT * FROM unnest($2::bigint[], $3::text[], $4::float8[]) AS r (id, outcome, retry_in)
),
held AS (
    SELECT e.id, e.passkit_id, r.outcome, r.retry_in
      FROM loyaltyd.wallet_events e JOIN r ON r.id = e.id
     WHERE e.state = 'claimed' AND e.lease_owner = $1
),
finished AS (
    DELETE FROM loyaltyd.wallet_events e
     USING held h
     WHERE e.id = h.id
       AND (h.outcome <> 'retry'
            OR EXISTS (SELECT 1 FROM loyaltyd.wallet_events n
                        WHERE n.passkit_id = h.passkit_id AND n.state = 'pending'))
    RETURNING e.id
),
retried AS (
    UPDATE loyaltyd.wallet_events e
       SET state = 'pending', lease_owner = NULL,
           available_at = CASE WHEN h.retry_in = 'Infinity' THEN 'infinity'
                               ELSE now() + make_interval(secs => h.retry_in) END
      FROM held h
     WHERE e.id = h.id AND h.outcome = 'retry' AND e.id NOT IN (SELECT id FROM finished)
)
-- A flood about one pass costs PassKit one read every two seconds at most: the next read of a
-- pass just read waits that long (well within the five seconds a status may take).
UPDATE loyaltyd.wallet_events e
   SET available_at = greatest(e.available_at, now() + interval '2 seconds')
  FROM held h
 WHERE e.passkit_id = h.passkit_id AND e.state = 'pending' AND h.outcome <> 'retry'
   AND e.id NOT IN (SELECT id FROM finished);

-- name: extend_wallet_events
-- $1 = owner, $2 = ids being read, $3 = lease length in seconds.
UPDATE loyaltyd.wallet_events
   SET available_at = now() + make_interval(secs => $3)
 WHERE id = ANY($2::bigint[]) AND state = 'claimed' AND lease_owner = $1;

-- name: release_wallet_events
-- $1 = owner, $2 = ids to give back (shutdown): due now (or folded into a newer waiting row of
-- the same pass), the attempt not counted, the other daemons rung.
WITH mine AS (
    SELECT id, passkit_id FROM loyaltyd.wallet_events
     WHERE id = ANY($2::bigint[]) AND state = 'claimed' AND lease_owner = $1
),
folded AS (
    DELETE FROM loyaltyd.wallet_events e USING mine m
     WHERE e.id = m.id
       AND EXISTS (SELECT 1 FROM loyaltyd.wallet_events n
                    WHERE n.passkit_id = m.passkit_id AND n.state = 'pending')
    RETURNING e.id
),
released AS (
    UPDATE loyaltyd.wallet_events e
       SET state = 'pending', lease_owner = NULL, available_at = now(),
           attempts = greatest(e.attempts - 1, 0)
      FROM mine m
     WHERE e.id = m.id AND e.id NOT IN (SELECT id FROM folded)
    RETURNING 1
)
SELECT pg_notify('loyaltyd_wallet_events', '')
 WHERE EXISTS (SELECT 1 FROM released) OR EXISTS (SELECT 1 FROM folded);

-- --- what an operator sees ---------------------------------------------------------------------

-- name: wallet_status_by_program
-- Per program: passes by passes_master.status (INSTALLED, UNINSTALLED, …), the last sweep of
-- each class (when, how it ended, its summary), webhooks received by event, and the inbox.
SELECT g.id AS program_id, g.name, g.wallet_status_from_passkit AS follows,
       (SELECT jsonb_object_agg(c.status, c.passes) FROM loyaltyd.pass_status_counts c
         WHERE c.program_id = g.id AND c.passes > 0) AS passes,  -- sql/073
       (SELECT jsonb_agg(jsonb_build_object('protocol', w.protocol, 'state', w.state,
                                            'started_at', w.started_at,
                                            'finished_at', w.finished_at,
                                            'summary', w.summary, 'error', w.error)
                         ORDER BY w.protocol)
          FROM (SELECT DISTINCT ON (protocol) * FROM loyaltyd.wallet_sweeps s
                 WHERE s.program_id = g.id ORDER BY protocol, started_at DESC) w) AS sweeps,
       (SELECT extract(epoch FROM now() - max(s.started_at))::float8
          FROM loyaltyd.wallet_sweeps s
         WHERE s.program_id = g.id AND s.state = 'completed') AS sweep_age,
       (SELECT jsonb_object_agg(c.event, c.received) FROM loyaltyd.wallet_event_counts c
         WHERE c.program_id = g.id) AS webhooks
  FROM programs g
 ORDER BY g.name, g.id;

-- name: wallet_inbox_depth
-- Passes waiting to be re-read (and those being read), and webhooks about passes loyaltyd
-- does not know.
SELECT (SELECT count(*) FROM loyaltyd.wallet_events)::int AS depth,
       (SELECT coalesce(sum(received), 0) FROM loyaltyd.wallet_event_counts
         WHERE program_id IS NULL)::bigint AS unknown;
