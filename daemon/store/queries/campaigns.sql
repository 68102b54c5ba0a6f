-- Push campaign statements (push_campaigns, loyaltyd.campaign_deliveries: docs/schema.sql).
-- Each is one short statement; no transaction is held open across a PassKit call or a CSV
-- download.
--
-- Every statement that updates push_campaigns calls loyaltyd.writing_as_daemon() in its WHERE
-- clause: the rows it writes pass that clause first, so the columns that belong to loyaltyd
-- (status moves, counters, results, leases) are written as the daemon's, in this transaction
-- only (sql/058). tests/store/test_daemon_identity.py holds every such statement to it.

-- --- planner: campaigns ----------------------------------------------------------------------

-- name: due_campaigns
-- $1 = at most this many, $2 / $3 = the most member ids / zip codes a campaign may list, $4 =
-- seconds without a heartbeat after which a daemon is dead (its leases are void). The
-- campaigns the planner has work on, as read (no lock), each with its kind of work:
--   'plan'   PENDING ones whose time has come, DRAFTs to count, and PROCESSING ones a crashed
--            daemon was still planning (lease_owner set: a row some older tool left
--            PROCESSING is not ours to resend);
--   'finish' started, unfinished campaigns that are CANCELLED with recipients to skip or
--            nothing in flight any more, or PROCESSING with every recipient's outcome in.
-- A lease that has not run out keeps a row from everyone else (and after a retry decision,
-- from everyone until then). `version` (the row's xmin) lets the claim refuse a row edited
-- since it was read.
SELECT c.id, c.xmin::text AS version,
       CASE WHEN c.started_at IS NULL THEN 'plan' ELSE 'finish' END AS kind,
       c.lease_owner IS NOT NULL AS lease_expired,
       c.status, c.program_id, c.name, c.message_text,
       c.segment, c.min_tier_points, c.min_points, c.inactive_days,
       -- a list over its limit is not read at all: its count fails the campaign
       CASE WHEN coalesce(cardinality(c.zip_codes), 0) <= $3 THEN c.zip_codes END AS zip_codes,
       cardinality(c.zip_codes) AS zip_code_count,
       CASE WHEN coalesce(cardinality(c.member_ids), 0) <= $2 THEN c.member_ids END AS member_ids,
       cardinality(c.member_ids) AS member_id_count,
       c.csv_upload_url, g.id IS NOT NULL AS program_exists,
       extract(epoch FROM now() - coalesce(c.scheduled_at, c.created_at, now()))::float8
           AS owed_seconds,
       coalesce(a.attempts, 0) + 1 AS attempts  -- this claim's, 1-based (sql/071)
  FROM push_campaigns c
  LEFT JOIN programs g ON g.id = c.program_id
  LEFT JOIN loyaltyd.campaign_attempts a ON a.campaign_id = c.id
 WHERE loyaltyd.lease_lapsed(c.lease_expires_at, c.lease_owner, loyaltyd.dead_daemons($4))
   -- rows an earlier tool left behind are history, never sent (sql/006)
   AND NOT c.predates_loyaltyd
   AND ((c.status = 'PENDING' AND (c.scheduled_at IS NULL OR c.scheduled_at <= now()))
     OR (c.status = 'DRAFT' AND c.audience_counted_at IS NULL)
     OR (c.status = 'PROCESSING' AND c.started_at IS NULL AND c.lease_owner IS NOT NULL)
     OR (c.started_at IS NOT NULL AND c.finished_at IS NULL AND c.status = 'CANCELLED'
         AND (EXISTS (SELECT 1 FROM loyaltyd.campaign_deliveries d
                       WHERE d.campaign_id = c.id
                         AND (d.state = 'pending'
                           OR (d.state = 'claimed' AND d.available_at <= now())))
           OR NOT EXISTS (SELECT 1 FROM loyaltyd.campaign_deliveries d
                           WHERE d.campaign_id = c.id AND d.state = 'claimed')))
     OR (c.started_at IS NOT NULL AND c.finished_at IS NULL AND c.status = 'PROCESSING'
         AND NOT EXISTS (SELECT 1 FROM loyaltyd.campaign_deliveries d
                          WHERE d.campaign_id = c.id AND d.state IN ('pending', 'claimed'))))
 ORDER BY coalesce(c.scheduled_at, c.created_at), c.id
 LIMIT $1;

-- name: claim_campaigns
-- $1 = campaign ids, $2 = their versions as read, $3 = owner, $4 = lease length in seconds.
-- Leases to $3, in one statement, each campaign no other daemon holds and no admin changed
-- since it was read (a PENDING one becomes PROCESSING). Returns each leased one's status. A
-- row breaking a rule that a NOT VALID constraint let in fails the whole statement with a
-- check_violation: the caller then claims them one at a time (one-element arrays) to find it.
WITH wanted AS (
    SELECT * FROM unnest($1::uuid[], $2::text[]) AS w (id, version)
),
unchanged AS (
    SELECT c.id FROM push_campaigns c JOIN wanted w ON w.id = c.id AND c.xmin::text = w.version
     ORDER BY c.id
       FOR UPDATE OF c SKIP LOCKED
),
counted AS (
    -- One more try each, for the back-off should it fail again (cleared by record_campaigns).
    INSERT INTO loyaltyd.campaign_attempts AS a (campaign_id, attempts)
    SELECT id, 1 FROM unchanged
    ON CONFLICT (campaign_id) DO UPDATE SET attempts = a.attempts + 1
)
UPDATE push_campaigns c
   SET status = CASE WHEN c.status = 'PENDING' THEN 'PROCESSING' ELSE c.status END,
       lease_owner = $3,
       lease_expires_at = now() + make_interval(secs => $4)
  FROM unchanged
 WHERE c.id = unchanged.id AND loyaltyd.writing_as_daemon()
RETURNING c.id, c.status;

-- name: fail_unclaimed_campaign
-- $1 = campaign id, $2 = its version as read, $3 = error for the admin. Nothing was sent.
UPDATE push_campaigns
   SET status = 'FAILED', error = $3, finished_at = now(),
       lease_owner = NULL, lease_expires_at = NULL
 WHERE id = $1 AND xmin::text = $2 AND started_at IS NULL
   AND loyaltyd.writing_as_daemon()
RETURNING id;

-- name: record_campaigns
-- $1 = owner; $2 campaign ids, $3 outcomes ('sent'|'skipped'|'retry'|'failed'), $4 seconds until
-- the next try (retry), $5 errors. The lease is dropped, only by its holder. A failed campaign
-- that never started is FAILED with the error for the admin; one that started keeps its
-- status (messages went out) and is looked at again in a minute. A retry keeps everyone off it
-- until its time (a campaign claimed to start goes back to PENDING until then).
WITH r AS (
    SELECT * FROM unnest($2::uuid[], $3::text[], $4::float8[], $5::text[])
        AS r (id, outcome, retry_in, error)
),
settled AS (
    -- An outcome other than a retry starts the count again.
    DELETE FROM loyaltyd.campaign_attempts a USING r
     WHERE a.campaign_id = r.id AND r.outcome <> 'retry'
)
UPDATE push_campaigns c
   SET status = CASE WHEN r.outcome = 'failed' AND c.started_at IS NULL THEN 'FAILED'
                     -- claimed to start, not started: waiting again, as before its claim
                     WHEN r.outcome = 'retry' AND c.started_at IS NULL
                          AND c.status = 'PROCESSING' THEN 'PENDING'
                     ELSE c.status END,
       error = CASE WHEN r.outcome = 'failed' AND c.started_at IS NULL THEN r.error
                    ELSE c.error END,
       finished_at = CASE WHEN r.outcome = 'failed' AND c.started_at IS NULL THEN now()
                          ELSE c.finished_at END,
       lease_owner = NULL,
       lease_expires_at = CASE
           WHEN r.outcome = 'retry' THEN now() + make_interval(secs => r.retry_in)
           WHEN r.outcome = 'failed' AND c.started_at IS NOT NULL THEN now() + interval '1 min'
       END
  FROM r
 WHERE c.id = r.id AND c.lease_owner = $1 AND loyaltyd.writing_as_daemon();

-- name: extend_campaign_leases
-- $1 = owner, $2 = campaign ids being worked on, $3 = lease length in seconds.
UPDATE push_campaigns
   SET lease_expires_at = now() + make_interval(secs => $3)
 WHERE id = ANY($2::uuid[]) AND lease_owner = $1 AND loyaltyd.writing_as_daemon();

-- name: release_campaigns
-- $1 = owner, $2 = campaign ids to give back (shutdown): anyone may take them at once. A
-- PROCESSING campaign not started yet stays PROCESSING with its owner cleared only by the next
-- claim, which recognises it by lease_owner.
UPDATE push_campaigns
   SET lease_expires_at = now()
 WHERE id = ANY($2::uuid[]) AND lease_owner = $1 AND loyaltyd.writing_as_daemon();

-- name: seconds_to_next_campaign
-- Seconds until the next scheduled PENDING campaign is due (NULL: none scheduled).
SELECT extract(epoch FROM min(scheduled_at) - now())::float8
  FROM push_campaigns
 WHERE status = 'PENDING' AND scheduled_at > now() AND NOT predates_loyaltyd;

-- name: count_audience
-- The program and its audience (validated, defaults filled in): how many phones it buzzes.
SELECT count(*)
  FROM loyaltyd.push_campaign_audience($program_id, $segment, $min_tier_points, $min_points,
                                       $inactive_days, $zip_codes, $member_ids);

-- name: unknown_member_ids
-- $1 = program id, $2 = member ids. How many match no pass of the program, and the first 100.
SELECT count(*)::int AS unknown_count,
       (array_agg(w.member_id ORDER BY w.member_id))[1:100] AS sample
  FROM (SELECT DISTINCT unnest($2::text[])) AS w (member_id)
 WHERE NOT EXISTS (SELECT 1 FROM passes_master p
                    WHERE p.program_id = $1 AND p.external_id = w.member_id);

-- name: save_draft_count
-- $1 = campaign id, $2 = owner, $3 = recipients, $4 = unknown member ids count, $5 = sample.
UPDATE push_campaigns
   SET recipient_count = $3, audience_counted_at = now(),
       unknown_member_count = $4, unknown_member_ids = $5,
       lease_owner = NULL, lease_expires_at = NULL
 WHERE id = $1 AND lease_owner = $2 AND status = 'DRAFT'
   AND loyaltyd.writing_as_daemon()
RETURNING id;

-- name: lock_campaign_to_start
-- $1 = campaign id, $2 = owner. Holds the row for the transaction that creates the deliveries;
-- nothing when the lease was lost or the admin cancelled or re-drafted it meanwhile.
SELECT id FROM push_campaigns
 WHERE id = $1 AND lease_owner = $2 AND status = 'PROCESSING' AND started_at IS NULL
   FOR UPDATE;

-- name: create_deliveries
-- The campaign, its program and its audience: one row per recipient, set-based (a million
-- recipients never pass through the daemon). Sorted, so the primary key fills in order.
INSERT INTO loyaltyd.campaign_deliveries (campaign_id, pass_id)
SELECT $campaign_id, a.pass_id
  FROM loyaltyd.push_campaign_audience($program_id, $segment, $min_tier_points, $min_points,
                                       $inactive_days, $zip_codes, $member_ids) AS a
 ORDER BY a.pass_id;

-- name: start_campaign
-- $1 = campaign id, $2 = recipients, $3 = unknown member ids count, $4 = sample. Sending
-- starts: counters from zero, the lease dropped (deliveries carry their own), and every
-- daemon's delivery worker woken.
WITH started AS (
    UPDATE push_campaigns
       SET recipient_count = $2, sent_count = 0, failed_count = 0, skipped_count = 0,
           started_at = now(), unknown_member_count = $3, unknown_member_ids = $4,
           lease_owner = NULL, lease_expires_at = NULL
     WHERE id = $1 AND loyaltyd.writing_as_daemon()
    RETURNING id
)
SELECT pg_notify('loyaltyd_deliveries', id::text) FROM started;

-- name: deliver_by_messages
-- $1 = campaign id: its recipients go out through the Messages API (in the transaction that
-- starts it), and the daemons' Messages API workers are woken when it commits.
WITH marked AS (
    INSERT INTO loyaltyd.campaign_messages (campaign_id) VALUES ($1)
    ON CONFLICT DO NOTHING
    RETURNING campaign_id
)
SELECT pg_notify('loyaltyd_campaign_messages', campaign_id::text) FROM marked;

-- name: skip_cancelled_deliveries
-- $1 = campaign id. If it is CANCELLED, its recipients not reached yet become skipped
-- ('campaign cancelled'), counted in the same statement. Rows in flight finish and count as
-- what they became; rows whose daemon died (lease expired) are skipped too, or the campaign
-- could never settle.
WITH cancelled AS (
    SELECT id FROM push_campaigns
     WHERE id = $1 AND status = 'CANCELLED' AND started_at IS NOT NULL AND finished_at IS NULL
),
skipped AS (
    UPDATE loyaltyd.campaign_deliveries d
       SET state = 'skipped', error = 'campaign cancelled', lease_owner = NULL,
           finished_at = now()
     WHERE d.campaign_id IN (SELECT id FROM cancelled)
       AND (d.state = 'pending' OR (d.state = 'claimed' AND d.available_at <= now()))
    RETURNING d.campaign_id
),
tally AS (
    SELECT campaign_id, count(*) AS n FROM skipped GROUP BY campaign_id
)
UPDATE push_campaigns c
   SET skipped_count = coalesce(c.skipped_count, 0) + t.n
  FROM tally t
 WHERE c.id = t.campaign_id AND loyaltyd.writing_as_daemon()
RETURNING c.id, t.n AS skipped;

-- name: settle_campaign
-- $1 = campaign id, $2 = owner holding its lease. If every recipient has an outcome:
-- PROCESSING becomes COMPLETED (a CANCELLED one stays CANCELLED), finished_at is set, the
-- lease dropped, and the seeds' audit row written once (notification_logs is unique per
-- campaign_id).
WITH finished AS (
    UPDATE push_campaigns c
       SET status = CASE WHEN c.status = 'PROCESSING' THEN 'COMPLETED' ELSE c.status END,
           finished_at = now(), lease_owner = NULL, lease_expires_at = NULL
     WHERE c.id = $1 AND c.lease_owner = $2 AND loyaltyd.writing_as_daemon()
       AND c.started_at IS NOT NULL AND c.finished_at IS NULL
       AND c.status IN ('PROCESSING', 'CANCELLED')
       AND NOT EXISTS (SELECT 1 FROM loyaltyd.campaign_deliveries d
                        WHERE d.campaign_id = c.id AND d.state IN ('pending', 'claimed'))
    RETURNING c.*
),
logged AS (
    INSERT INTO notification_logs (program_id, campaign_id, campaign_name, recipient_count,
                                   success_count, failed_count, skipped_count,
                                   message_content, target_segment)
    SELECT program_id, id, coalesce(name, 'Push campaign'), recipient_count,
           sent_count, failed_count, skipped_count, message_text, segment
      FROM finished
    ON CONFLICT (campaign_id) WHERE campaign_id IS NOT NULL DO NOTHING
)
SELECT id, program_id, status, recipient_count, sent_count, failed_count, skipped_count,
       extract(epoch FROM finished_at - started_at)::float8 AS seconds
  FROM finished;

-- --- delivery queue ----------------------------------------------------------------------------

-- name: serialise_delivery_claims
-- No parameters. Held until the claim's transaction ends: one delivery claim at a time across
-- every daemon, so the frequency cap of each sees the others' claims.
SELECT pg_advisory_xact_lock(hashtextextended('loyaltyd:claim_deliveries', 0));

-- name: claim_deliveries
-- $1 = owner, $2 = at most this many rows, $3 = lease length in seconds, $4 = seconds without
-- a heartbeat after which a daemon is dead, $5 = true for the recipients of campaigns sent
-- through the Messages API (loyaltyd.campaign_messages), false for the others. Returns the
-- rows claimed, with everything the
-- message needs, and the rows skipped here (state 'skipped': already final and counted) so
-- the caller can count them too.
WITH dead AS MATERIALIZED (
    SELECT loyaltyd.dead_daemons($4) AS owners  -- sql/070: the one rule
),
running AS MATERIALIZED (
    -- Campaigns being sent (a cancelled one is not PROCESSING, so its recipients stop being
    -- claimed the moment the admin's update commits), numbered for the turns below: programs
    -- among themselves, a program's campaigns within it.
    SELECT c.id, c.program_id,
           dense_rank() OVER (ORDER BY c.program_id) AS program_turn,
           row_number() OVER (PARTITION BY c.program_id ORDER BY c.started_at, c.id)
               AS campaign_turn,
           count(*) OVER (PARTITION BY c.program_id) AS campaigns
      FROM push_campaigns c
     WHERE c.status = 'PROCESSING'
       AND EXISTS (SELECT 1 FROM loyaltyd.campaign_messages m WHERE m.campaign_id = c.id) = $5
),
taken_over AS (
    -- Recipients claimed by a daemon that died (its heartbeat stopped, or its lease ran out):
    -- the oldest work, and few (a dead daemon's slots), so they go first.
    SELECT d.campaign_id, d.pass_id, true AS lease_expired, d.available_at,
           r.program_turn, r.campaign_turn, r.campaigns
      FROM running r
     CROSS JOIN dead
     CROSS JOIN LATERAL (
           SELECT d.campaign_id, d.pass_id, d.available_at
             FROM loyaltyd.campaign_deliveries d
            WHERE d.campaign_id = r.id AND d.state = 'claimed'
              AND loyaltyd.lease_lapsed(d.available_at, d.lease_owner, dead.owners)
            LIMIT $2
              FOR UPDATE SKIP LOCKED) d
),
fresh AS (
    -- Each campaign's pending recipients whose time has come, oldest due first. SKIP LOCKED:
    -- daemons claim side by side without waiting on each other.
    SELECT d.campaign_id, d.pass_id, false AS lease_expired, d.available_at,
           r.program_turn, r.campaign_turn, r.campaigns
      FROM running r
     CROSS JOIN LATERAL (
           SELECT d.campaign_id, d.pass_id, d.available_at
             FROM loyaltyd.campaign_deliveries d
            WHERE d.campaign_id = r.id AND d.state = 'pending' AND d.available_at <= now()
            ORDER BY d.available_at
            LIMIT $2
              FOR UPDATE SKIP LOCKED) d
),
candidates AS (
    SELECT * FROM taken_over UNION ALL SELECT * FROM fresh
),
due AS (
    -- Round robin, like Hatchet's GROUP_ROUND_ROBIN: one recipient of every program with
    -- work, then the next of each; within a program, its campaigns take turns the same way.
    -- A program with little work leaves its share to the others. Candidates not taken stay
    -- pending (their row locks end with this statement's transaction).
    SELECT campaign_id, pass_id, lease_expired
      FROM (SELECT c.*,
                   (row_number() OVER (PARTITION BY c.campaign_id
                                       ORDER BY c.lease_expired DESC, c.available_at,
                                                c.pass_id) - 1)
                       * c.campaigns + c.campaign_turn AS program_round
              FROM candidates c) ranked
     ORDER BY program_round, program_turn
     LIMIT $2
),
one_per_pass AS (
    -- A pass reached by two running campaigns gets one message per claim, so that the
    -- frequency cap below counts the first before allowing the second.
    SELECT DISTINCT ON (pass_id) * FROM due ORDER BY pass_id, campaign_id
),
checked AS (
    -- Why a due recipient must not get the message after all (NULL: send it). The audience
    -- was right when the campaign started; a member may have opted out since.
    SELECT o.campaign_id, o.pass_id, o.lease_expired,
           CASE
               WHEN p.id IS NULL THEN 'pass deleted'
               -- what PassKit said since the campaign started (sql/060): no phone to reach
               WHEN w.status = 'DELETED' OR p.status = 'DELETED' THEN 'pass deleted at PassKit'
               WHEN p.is_active IS NOT TRUE THEN 'pass no longer active'
               WHEN p.status = 'UNINSTALLED' THEN 'pass uninstalled from the wallet'
               WHEN p.status = 'INVALIDATED' THEN 'pass invalidated at PassKit'
               WHEN p.status IS DISTINCT FROM 'INSTALLED' THEN 'pass no longer installed'
               WHEN u.marketing_opt_in IS NOT TRUE THEN 'member opted out of marketing'
               WHEN recent.n >= g.max_pushes_per_pass_per_day THEN
                   format('frequency cap: %s campaign messages in the last 24 h (limit %s)',
                          recent.n, g.max_pushes_per_pass_per_day)
           END AS skip_reason
      FROM one_per_pass o
      LEFT JOIN passes_master p ON p.id = o.pass_id
      LEFT JOIN loyaltyd.wallet_passes w ON w.pass_id = o.pass_id
      LEFT JOIN users u ON u.id = p.user_id
      LEFT JOIN programs g ON g.id = p.program_id
     CROSS JOIN LATERAL (
           -- Campaign messages this pass got in the last 24 h, or is getting right now.
           SELECT count(*) AS n
             FROM loyaltyd.campaign_deliveries r
            WHERE r.pass_id = o.pass_id AND r.state IN ('sent', 'claimed')
              AND ((r.state = 'sent' AND r.finished_at > now() - interval '24 hours')
                OR (r.state = 'claimed' AND r.available_at > now()))) recent
),
claimed AS (
    UPDATE loyaltyd.campaign_deliveries d
       SET state = CASE WHEN k.skip_reason IS NULL THEN 'claimed' ELSE 'skipped' END,
           lease_owner = CASE WHEN k.skip_reason IS NULL THEN $1::uuid END,
           available_at = CASE WHEN k.skip_reason IS NULL
                               THEN now() + make_interval(secs => $3) ELSE d.available_at END,
           attempts = d.attempts + CASE WHEN k.skip_reason IS NULL THEN 1 ELSE 0 END,
           error = coalesce(k.skip_reason, d.error),
           finished_at = CASE WHEN k.skip_reason IS NOT NULL THEN now() END,
           finished_by = CASE WHEN k.skip_reason IS NOT NULL THEN $1::uuid END
      FROM checked k
     WHERE d.campaign_id = k.campaign_id AND d.pass_id = k.pass_id
    RETURNING d.campaign_id, d.pass_id, d.state, d.attempts, k.lease_expired
),
skips AS (
    SELECT campaign_id, count(*) AS n FROM claimed WHERE state = 'skipped' GROUP BY campaign_id
),
skip_locks AS MATERIALIZED (
    -- Campaign rows locked in id order, as record_deliveries does: no deadlock between them.
    SELECT c.id FROM push_campaigns c
     WHERE c.id IN (SELECT campaign_id FROM skips)
     ORDER BY c.id
       FOR UPDATE
),
counted AS (
    UPDATE push_campaigns c
       SET skipped_count = coalesce(c.skipped_count, 0) + s.n
      FROM skips s JOIN skip_locks l ON l.id = s.campaign_id
     WHERE c.id = s.campaign_id AND loyaltyd.writing_as_daemon()
)
SELECT cl.campaign_id, cl.pass_id, cl.state, cl.attempts, cl.lease_expired,
       coalesce(extract(epoch FROM now() - c.started_at), 0)::float8 AS owed_seconds,
       p.protocol, p.passkit_internal_id, c.message_text, u.first_name, u.last_name, m.points_balance AS points,
       g.name AS program_name
  FROM claimed cl
  JOIN push_campaigns c ON c.id = cl.campaign_id
  LEFT JOIN passes_master p ON p.id = cl.pass_id
  LEFT JOIN users u ON u.id = p.user_id
  LEFT JOIN programs g ON g.id = p.program_id
  LEFT JOIN protocol_membership m ON m.pass_id = cl.pass_id;

-- name: record_deliveries
-- Parallel arrays, one entry per delivery: outcomes are 'sent', 'failed', 'skipped' or 'retry';
-- retry_in is the seconds until the retry (NULL unless retry; Infinity: until PassKit answers
-- again); texts are as sent. Only rows still leased to the owner are written (a daemon that
-- lost its lease has no say any more), and the campaigns' counters move in the same statement,
-- so they always equal the rows.
WITH r AS (
    SELECT *
      FROM unnest($campaign_ids::uuid[], $pass_ids::uuid[], $outcomes::text[],
                  $retry_in::float8[], $errors::text[], $texts::text[])
        AS r (campaign_id, pass_id, outcome, retry_in, error, rendered_text)
),
written AS (
    UPDATE loyaltyd.campaign_deliveries d
       SET state = CASE WHEN r.outcome = 'retry' THEN 'pending' ELSE r.outcome END,
           lease_owner = NULL,
           available_at = CASE WHEN r.retry_in IS NULL THEN d.available_at
                               -- until PassKit answers again (release_held_work)
                               WHEN r.retry_in = 'Infinity' THEN 'infinity'::timestamptz
                               ELSE now() + make_interval(secs => r.retry_in) END,
           error = r.error,
           rendered_text = coalesce(r.rendered_text, d.rendered_text),
           finished_at = CASE WHEN r.outcome = 'retry' THEN NULL ELSE now() END,
           finished_by = CASE WHEN r.outcome = 'retry' THEN NULL ELSE $owner::uuid END
      FROM r
     WHERE d.campaign_id = r.campaign_id AND d.pass_id = r.pass_id
       -- Only claimed rows have an owner (a named CHECK says so). Testing state as well
       -- would lure the planner into scanning the partial indexes of every pending row
       -- instead of looking up these few keys.
       AND d.lease_owner = $owner
    RETURNING d.campaign_id, d.state
),
tally AS (
    SELECT campaign_id,
           count(*) FILTER (WHERE state = 'sent') AS sent,
           count(*) FILTER (WHERE state = 'failed') AS failed,
           count(*) FILTER (WHERE state = 'skipped') AS skipped
      FROM written
     WHERE state <> 'pending'
     GROUP BY campaign_id
),
campaign_locks AS MATERIALIZED (
    -- Campaign rows locked in id order, as claim_deliveries does: no deadlock between them.
    SELECT c.id FROM push_campaigns c
     WHERE c.id IN (SELECT campaign_id FROM tally)
     ORDER BY c.id
       FOR UPDATE
)
UPDATE push_campaigns c
   SET sent_count = coalesce(c.sent_count, 0) + t.sent,
       failed_count = coalesce(c.failed_count, 0) + t.failed,
       skipped_count = coalesce(c.skipped_count, 0) + t.skipped
  FROM tally t JOIN campaign_locks l ON l.id = t.campaign_id
 WHERE c.id = t.campaign_id AND loyaltyd.writing_as_daemon();

-- name: extend_delivery_leases
-- $1 = owner, $2 campaign ids, $3 pass ids in flight, $4 = lease length in seconds.
-- (An owner implies state 'claimed'; see record_deliveries for why state is not tested.)
UPDATE loyaltyd.campaign_deliveries d
   SET available_at = now() + make_interval(secs => $4)
  FROM unnest($2::uuid[], $3::uuid[]) AS k (campaign_id, pass_id)
 WHERE d.campaign_id = k.campaign_id AND d.pass_id = k.pass_id AND d.lease_owner = $1;

-- name: release_deliveries
-- $1 = owner, $2 campaign ids, $3 pass ids to give back (shutdown): due now, the attempt not
-- counted, and the other daemons woken to take them on $4, the queue's own channel (pass by
-- pass, or the Messages API's).
WITH released AS (
    UPDATE loyaltyd.campaign_deliveries d
       SET state = 'pending', lease_owner = NULL, available_at = now(),
           attempts = greatest(d.attempts - 1, 0)
      FROM unnest($2::uuid[], $3::uuid[]) AS k (campaign_id, pass_id)
     WHERE d.campaign_id = k.campaign_id AND d.pass_id = k.pass_id AND d.lease_owner = $1
    RETURNING 1
)
SELECT pg_notify($4, '') WHERE EXISTS (SELECT 1 FROM released);

-- name: campaign_delivery_depth
-- Recipients of campaigns being sent that have no outcome yet (waiting or in flight), from the
-- counters (no scan of the deliveries), and how long ago the oldest of those campaigns started.
SELECT coalesce(sum(greatest(coalesce(recipient_count, 0) - coalesce(sent_count, 0)
                             - coalesce(failed_count, 0) - coalesce(skipped_count, 0), 0)),
                0)::bigint AS waiting,
       coalesce(extract(epoch FROM now() - min(started_at)), 0)::float8 AS oldest_age
  FROM push_campaigns
 WHERE status = 'PROCESSING' AND started_at IS NOT NULL AND finished_at IS NULL;

-- --- API -------------------------------------------------------------------------------------

-- name: program_exists
-- $1 = program id.
SELECT EXISTS (SELECT 1 FROM programs WHERE id = $1);

-- name: insert_campaign
-- A campaign from the HTTP API: scheduled_at NULL is now, status 'PENDING' or 'DRAFT',
-- created_by the API key's label. The trigger rings the planner.
INSERT INTO push_campaigns (program_id, name, message_text, segment, min_tier_points,
                            min_points, inactive_days, zip_codes, member_ids, csv_upload_url,
                            scheduled_at, status, created_by)
VALUES ($program_id, $name, $message, $segment, $min_tier_points, $min_points, $inactive_days,
        $zip_codes, $member_ids, $csv_url, $scheduled_at, $status, $created_by)
RETURNING id;

-- name: campaign_progress
-- $1 = campaign id. One row of the push_campaign_progress view.
SELECT id, program_id, name, status, segment, scheduled_at, started_at, finished_at,
       recipient_count, sent_count, failed_count, skipped_count, remaining_count,
       progress_percent::float8 AS progress_percent, error, unknown_member_count, created_at
  FROM push_campaign_progress WHERE id = $1;

-- name: campaign_message_id
-- $1 = campaign id. The PassKit message created for it (NULL: none yet).
SELECT passkit_message_id FROM loyaltyd.campaign_messages WHERE campaign_id = $1;

-- name: save_campaign_message_id
-- $1 = campaign id, $2 = the PassKit message just created. The first daemon to save one wins
-- (no row back: read the winner's with campaign_message_id).
UPDATE loyaltyd.campaign_messages SET passkit_message_id = $2
 WHERE campaign_id = $1 AND passkit_message_id IS NULL
RETURNING passkit_message_id;
