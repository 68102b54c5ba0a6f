-- The pass-sync queue: one row per pass, coalescing a burst of changes into the newest state,
-- leased to one daemon at a time, fed by triggers that also ring the `loyaltyd_syncs` doorbell.

CREATE TABLE IF NOT EXISTS pass_syncs (
    pass_id uuid PRIMARY KEY REFERENCES passes_master (id) ON DELETE CASCADE,
    program_id uuid,
    state text NOT NULL DEFAULT 'pending',
    -- bumped by every enqueue; an outcome only clears work requested up to the generation
    -- its worker claimed, so a change arriving mid-call is synced again afterwards
    generation bigint NOT NULL DEFAULT 1,
    claimed_generation bigint,
    -- what is owed to PassKit; *_generation NULL = nothing of that kind pending
    points_balance integer,
    points_generation bigint,
    message text,
    message_transaction_id uuid,
    message_generation bigint,
    redeem_generation bigint,
    check_in_generation bigint,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_owner uuid,
    lease_expires_at timestamptz,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    last_synced_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'pass_syncs_state_is_known') THEN
        ALTER TABLE pass_syncs ADD CONSTRAINT pass_syncs_state_is_known
            CHECK (state IN ('idle', 'pending', 'claimed', 'dead'));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'pass_syncs_claimed_rows_have_a_lease') THEN
        ALTER TABLE pass_syncs ADD CONSTRAINT pass_syncs_claimed_rows_have_a_lease
            CHECK ((state = 'claimed') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL));
    END IF;
END $$;

CREATE INDEX IF NOT EXISTS pass_syncs_due_idx ON pass_syncs (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS pass_syncs_lease_idx ON pass_syncs (lease_expires_at)
    WHERE state = 'claimed';
CREATE INDEX IF NOT EXISTS pass_syncs_dead_idx ON pass_syncs (updated_at) WHERE state = 'dead';

-- Upsert one kind of owed work for a pass. A dead row comes back to life with fresh attempts
-- (new work deserves a new try); a claimed row stays claimed and its holder will see the
-- generation moved on.
CREATE OR REPLACE FUNCTION loyaltyd_enqueue_pass_sync(
    p_pass_id uuid, p_program_id uuid, p_kind text,
    p_points integer DEFAULT NULL, p_message text DEFAULT NULL, p_transaction_id uuid DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pass_syncs AS s (pass_id, program_id, points_balance, points_generation,
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
        next_attempt_at = CASE WHEN s.state IN ('idle', 'dead') THEN now()
                               ELSE s.next_attempt_at END,
        enqueued_at = CASE WHEN s.state IN ('idle', 'dead') THEN now() ELSE s.enqueued_at END,
        updated_at = now();
    -- One doorbell for the whole queue; identical payloads fold within a transaction.
    PERFORM pg_notify('loyaltyd_syncs', '');
END $$;

-- Transactions owe a message (any kind that carries one), a coupon redemption or a check-in.
-- Balances are owed by the protocol_membership trigger below, so a change made outside the
-- ledger (an admin editing the balance in Softr) reaches the pass too.
CREATE OR REPLACE FUNCTION loyaltyd_transactions_enqueue_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'REDEEM' THEN
        PERFORM loyaltyd_enqueue_pass_sync(NEW.pass_id, NEW.program_id, 'redeem');
    ELSIF NEW.kind = 'CHECK_IN' THEN
        PERFORM loyaltyd_enqueue_pass_sync(NEW.pass_id, NEW.program_id, 'check_in');
    END IF;
    IF NEW.notification_message IS NOT NULL AND btrim(NEW.notification_message) <> '' THEN
        PERFORM loyaltyd_enqueue_pass_sync(NEW.pass_id, NEW.program_id, 'message',
                                           NULL, NEW.notification_message, NEW.id);
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS transactions_enqueue_pass_sync ON transactions;
CREATE TRIGGER transactions_enqueue_pass_sync
    AFTER INSERT ON transactions
    FOR EACH ROW EXECUTE FUNCTION loyaltyd_transactions_enqueue_sync();

CREATE OR REPLACE FUNCTION loyaltyd_membership_enqueue_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM loyaltyd_enqueue_pass_sync(
        NEW.pass_id, (SELECT program_id FROM passes_master WHERE id = NEW.pass_id),
        'points', NEW.points_balance);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS protocol_membership_enqueue_pass_sync ON protocol_membership;
CREATE TRIGGER protocol_membership_enqueue_pass_sync
    AFTER UPDATE OF points_balance ON protocol_membership
    FOR EACH ROW WHEN (OLD.points_balance IS DISTINCT FROM NEW.points_balance)
    EXECUTE FUNCTION loyaltyd_membership_enqueue_sync();
