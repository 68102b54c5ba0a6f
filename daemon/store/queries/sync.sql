-- Pass-sync queue statements (table loyaltyd.pass_syncs: docs/schema.sql). Each is one short
-- statement: no transaction is ever held open across a PassKit call.

-- name: claim_pass_syncs
-- $1 = owner (daemon instance id), $2 = at most this many rows, $3 = lease length in seconds,
-- $4 = seconds without a heartbeat after which a daemon is dead. Returns the work owed for
-- each claimed pass with what PassKit needs to address it.
WITH dead AS MATERIALIZED (
    SELECT loyaltyd.dead_daemons($4) AS owners  -- sql/070: the one rule
),
due AS (
    -- Rows whose time has come, and rows whose daemon died: its heartbeat stopped, or (a
    -- daemon that never beat) the lease ran out. SKIP LOCKED lets several daemons claim side
    -- by side without waiting on each other.
    SELECT pass_id, state = 'claimed' AS lease_expired
      FROM loyaltyd.pass_syncs, dead
     WHERE (state = 'pending' AND available_at <= now())
        OR (state = 'claimed' AND loyaltyd.lease_lapsed(available_at, lease_owner, dead.owners))
     ORDER BY available_at
     LIMIT $2
       FOR UPDATE OF pass_syncs SKIP LOCKED
)
UPDATE loyaltyd.pass_syncs s
   SET state = 'claimed',
       lease_owner = $1,
       available_at = now() + make_interval(secs => $3),
       claimed_generation = s.generation,
       attempts = s.attempts + 1,
       updated_at = now()
  FROM due
  JOIN passes_master p ON p.id = due.pass_id
  LEFT JOIN programs g ON g.id = p.program_id
  LEFT JOIN protocol_membership m ON m.pass_id = due.pass_id
  LEFT JOIN loyaltyd.wallet_passes w ON w.pass_id = due.pass_id
 WHERE s.pass_id = due.pass_id
RETURNING s.pass_id, s.generation, s.attempts, due.lease_expired,
          extract(epoch FROM now() - s.enqueued_at)::float8 AS owed_seconds,
          p.passkit_internal_id, p.protocol,
          -- a pass PassKit deleted or invalidated is owed nothing any more (sql/060)
          CASE WHEN w.status = 'DELETED' THEN 'DELETED'
               WHEN p.status IN ('DELETED', 'INVALIDATED') THEN p.status END AS unreachable,
          CASE WHEN s.points_generation IS NOT NULL THEN s.points_balance END AS points_balance,
          -- where the program shows loyaltyd's tier points at PassKit (sql/074): as they are now
          CASE WHEN s.points_generation IS NOT NULL AND g.passkit_tier_points
               THEN m.tier_points END AS tier_points,
          CASE WHEN s.message_generation IS NOT NULL THEN s.message END AS message,
          s.redeem_generation IS NOT NULL AS redeem,
          s.check_in_generation IS NOT NULL AS check_in;

-- name: record_pass_syncs
-- $1 = owner; $2 pass ids, $3 generations claimed, $4 outcomes ('sent'|'skipped'|'retry'|
-- 'failed'; sent and skipped clear the work, failed makes the row dead), $5 seconds until the
-- retry (NULL unless retry; Infinity: until PassKit answers again), $6 errors (NULL when sent). Only rows still leased to $1 are
-- written: a daemon that lost its lease has no say any more.
WITH r AS (
    SELECT r.pass_id, r.gen, r.retry_in, r.error, r.outcome = 'sent' AS sent,
           CASE WHEN r.outcome IN ('sent', 'skipped') THEN 'done'
                WHEN r.outcome = 'failed' THEN 'dead'
                ELSE r.outcome END AS outcome
      FROM unnest($2::uuid[], $3::bigint[], $4::text[], $5::float8[], $6::text[])
        AS r(pass_id, gen, outcome, retry_in, error)
)
UPDATE loyaltyd.pass_syncs s
   SET -- done clears exactly the work that was owed when claimed; newer work stays owed
       points_generation = CASE WHEN r.outcome = 'done' AND s.points_generation <= r.gen
                                THEN NULL ELSE s.points_generation END,
       message = CASE WHEN r.outcome = 'done' AND s.message_generation <= r.gen
                      THEN NULL ELSE s.message END,
       message_transaction_id = CASE WHEN r.outcome = 'done' AND s.message_generation <= r.gen
                                     THEN NULL ELSE s.message_transaction_id END,
       message_generation = CASE WHEN r.outcome = 'done' AND s.message_generation <= r.gen
                                 THEN NULL ELSE s.message_generation END,
       redeem_generation = CASE WHEN r.outcome = 'done' AND s.redeem_generation <= r.gen
                                THEN NULL ELSE s.redeem_generation END,
       check_in_generation = CASE WHEN r.outcome = 'done' AND s.check_in_generation <= r.gen
                                  THEN NULL ELSE s.check_in_generation END,
       state = CASE WHEN r.outcome = 'dead' THEN 'dead'
                    WHEN r.outcome = 'retry' OR s.generation > r.gen THEN 'pending'
                    ELSE 'idle' END,
       attempts = CASE WHEN r.outcome = 'done' THEN 0 ELSE s.attempts END,
       -- an infinite wait: until PassKit answers again (release_held_work)
       available_at = CASE WHEN r.retry_in = 'Infinity' THEN 'infinity'::timestamptz
                           ELSE now() + make_interval(secs => coalesce(r.retry_in, 0)) END,
       enqueued_at = CASE WHEN r.outcome = 'done' AND s.generation > r.gen THEN now()
                          ELSE s.enqueued_at END,
       last_error = r.error,
       -- a skipped sync (no PassKit id, out of reach) owes nothing, yet synced nothing
       last_synced_at = CASE WHEN r.sent THEN now() ELSE s.last_synced_at END,
       lease_owner = NULL,
       updated_at = now()
  FROM r
 WHERE s.pass_id = r.pass_id AND s.state = 'claimed' AND s.lease_owner = $1;

-- name: extend_pass_sync_leases
-- $1 = owner, $2 = pass ids in flight, $3 = lease length in seconds.
UPDATE loyaltyd.pass_syncs
   SET available_at = now() + make_interval(secs => $3)
 WHERE pass_id = ANY($2::uuid[]) AND state = 'claimed' AND lease_owner = $1;

-- name: release_pass_syncs
-- $1 = owner, $2 = pass ids to give back (shutdown): due now, the attempt not counted.
UPDATE loyaltyd.pass_syncs
   SET state = 'pending', lease_owner = NULL, available_at = now(),
       attempts = greatest(attempts - 1, 0), updated_at = now()
 WHERE pass_id = ANY($2::uuid[]) AND state = 'claimed' AND lease_owner = $1;

-- name: requeue_dead_pass_syncs
-- $1 = only this pass (NULL = every dead row). Returns the requeued pass ids.
UPDATE loyaltyd.pass_syncs
   SET state = 'pending', attempts = 0, available_at = now(), last_error = NULL,
       updated_at = now()
 WHERE state = 'dead' AND ($1::uuid IS NULL OR pass_id = $1)
RETURNING pass_id;

-- name: notify_syncs
-- Ring the doorbell of every daemon (after a requeue).
SELECT pg_notify('loyaltyd_syncs', '');
