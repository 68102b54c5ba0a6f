-- One lease shape for every queue loyaltyd owns (pass_syncs, campaign_deliveries,
-- wallet_events): a row is `state` 'pending' or 'claimed'; `lease_owner` is the daemon holding
-- a claimed row; `available_at` is when a pending row is due and when a claimed row's lease
-- runs out; `attempts` counts the tries since the work last went through. The campaign
-- deliveries and the wallet inbox had that shape; pass_syncs kept two times (next_attempt_at,
-- lease_expires_at) and now keeps one. push_campaigns is the user's table: its lease is
-- lease_owner and lease_expires_at (a Softr contract), which mean the same, with its attempts in
-- loyaltyd.campaign_attempts (sql/071).
--
-- Whether a lease no longer holds is said once, in loyaltyd.lease_lapsed, with the dead-owner
-- rule (sql/070). A daemon from before this migration cannot claim pass syncs after it: stop
-- every daemon, upgrade them all, start them again (docs/operations.md, "Upgrading").

-- A claimed row's lease end moves into the one time column, then the renamed column carries it.
UPDATE loyaltyd.pass_syncs SET next_attempt_at = lease_expires_at WHERE state = 'claimed';
ALTER TABLE loyaltyd.pass_syncs DROP CONSTRAINT IF EXISTS pass_syncs_claimed_rows_have_a_lease;
DROP INDEX IF EXISTS loyaltyd.pass_syncs_lease_idx;
ALTER TABLE loyaltyd.pass_syncs DROP COLUMN lease_expires_at;
ALTER TABLE loyaltyd.pass_syncs RENAME COLUMN next_attempt_at TO available_at;
-- The due index (pending rows by available_at) follows the rename; claimed rows get theirs.
CREATE INDEX IF NOT EXISTS pass_syncs_claimed_idx
    ON loyaltyd.pass_syncs (available_at) WHERE state = 'claimed';
ALTER TABLE loyaltyd.pass_syncs ADD CONSTRAINT pass_syncs_claimed_rows_have_a_lease_owner
    CHECK ((state = 'claimed') = (lease_owner IS NOT NULL)) NOT VALID;
ALTER TABLE loyaltyd.pass_syncs VALIDATE CONSTRAINT pass_syncs_claimed_rows_have_a_lease_owner;
ALTER TABLE loyaltyd.wallet_events
    RENAME CONSTRAINT wallet_events_owner_iff_claimed TO wallet_events_claimed_rows_have_a_lease_owner;

COMMENT ON COLUMN loyaltyd.pass_syncs.available_at IS
    'pending: when the sync is due; claimed: when its lease runs out.';
COMMENT ON COLUMN loyaltyd.campaign_deliveries.available_at IS
    'pending: when the delivery is due; claimed: when its lease runs out.';
COMMENT ON COLUMN loyaltyd.wallet_events.available_at IS
    'pending: when the re-read is due; claimed: when its lease runs out.';

-- A claimed row's lease is void once it runs out or its owner is dead (dead: the owners
-- loyaltyd.dead_daemons names). An unset `until` (push_campaigns: no lease) holds nothing.
-- Claims call it on claimed rows only (a daemon's in-flight work), so its cost is that of a
-- few hundred calls; its fixed search_path keeps it from being inlined, as the database
-- advisor asks of every function.
CREATE OR REPLACE FUNCTION loyaltyd.lease_lapsed(until timestamptz, owner uuid, dead uuid[])
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE SET search_path = '' AS $$
    SELECT until IS NULL OR until <= pg_catalog.now() OR owner = ANY(dead)
$$;
REVOKE ALL ON FUNCTION loyaltyd.lease_lapsed(timestamptz, uuid, uuid[]) FROM PUBLIC;
COMMENT ON FUNCTION loyaltyd.lease_lapsed(timestamptz, uuid, uuid[]) IS
    'Whether a lease no longer holds: it ran out, or its owner is among the dead daemons.';

-- The pass-sync enqueue with the renamed column (050, 074 otherwise unchanged).
CREATE OR REPLACE FUNCTION loyaltyd.enqueue_pass_sync(
    p_pass_id uuid, p_program_id uuid, p_kind text,
    p_points integer DEFAULT NULL, p_message text DEFAULT NULL, p_transaction_id uuid DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
    INSERT INTO loyaltyd.pass_syncs AS s (pass_id, program_id, points_balance, points_generation,
                                          message, message_transaction_id, message_generation,
                                          redeem_generation, check_in_generation)
    VALUES (p_pass_id, p_program_id,
            p_points, CASE WHEN p_kind = 'points' THEN 1 END,
            p_message, p_transaction_id, CASE WHEN p_kind = 'message' THEN 1 END,
            CASE WHEN p_kind = 'redeem' THEN 1 END,
            CASE WHEN p_kind = 'check_in' THEN 1 END)
    ON CONFLICT (pass_id) DO UPDATE SET
        generation = s.generation + 1,
        points_balance = CASE WHEN p_kind = 'points' THEN p_points ELSE s.points_balance END,
        points_generation = CASE WHEN p_kind = 'points' THEN s.generation + 1
                                 ELSE s.points_generation END,
        message = CASE WHEN p_kind = 'message' THEN p_message ELSE s.message END,
        message_transaction_id = CASE WHEN p_kind = 'message' THEN p_transaction_id
                                      ELSE s.message_transaction_id END,
        message_generation = CASE WHEN p_kind = 'message' THEN s.generation + 1
                                  ELSE s.message_generation END,
        redeem_generation = CASE WHEN p_kind = 'redeem' THEN s.generation + 1
                                 ELSE s.redeem_generation END,
        check_in_generation = CASE WHEN p_kind = 'check_in' THEN s.generation + 1
                                   ELSE s.check_in_generation END,
        state = CASE WHEN s.state = 'claimed' THEN 'claimed' ELSE 'pending' END,
        attempts = CASE WHEN s.state IN ('idle', 'dead') THEN 0 ELSE s.attempts END,
        -- a claimed row keeps its lease end; any other waits no longer
        available_at = CASE WHEN s.state IN ('idle', 'dead') THEN pg_catalog.now()
                            ELSE s.available_at END,
        enqueued_at = CASE WHEN s.state IN ('idle', 'dead') THEN pg_catalog.now()
                           ELSE s.enqueued_at END,
        updated_at = pg_catalog.now();
    -- One doorbell for the whole queue; identical payloads fold within a transaction.
    PERFORM pg_catalog.pg_notify('loyaltyd_syncs', '');
END $$;
