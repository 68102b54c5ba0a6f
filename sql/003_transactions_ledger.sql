-- The points ledger: the transactions table and process_membership_transaction, the one atomic
-- way to move points (lock balance, apply delta, write ledger row, idempotent on external_ref).

CREATE TABLE IF NOT EXISTS transactions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid()
);
ALTER TABLE transactions
    ADD COLUMN IF NOT EXISTS pass_id uuid REFERENCES passes_master (id),
    ADD COLUMN IF NOT EXISTS program_id uuid REFERENCES programs (id),
    ADD COLUMN IF NOT EXISTS kind text,
    ADD COLUMN IF NOT EXISTS points_delta integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS balance_after integer,
    ADD COLUMN IF NOT EXISTS notification_message text,
    ADD COLUMN IF NOT EXISTS external_ref text,
    ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'transactions'::regclass
                     AND conname = 'transactions_kind_is_known') THEN
        ALTER TABLE transactions ADD CONSTRAINT transactions_kind_is_known
            CHECK (kind IN ('EARN', 'BURN', 'ADJUST', 'BIRTHDAY', 'REDEEM', 'CHECK_IN')) NOT VALID;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'transactions'::regclass
                     AND conname = 'transactions_message_up_to_500_chars') THEN
        ALTER TABLE transactions ADD CONSTRAINT transactions_message_up_to_500_chars
            CHECK (notification_message IS NULL OR char_length(notification_message) <= 500)
            NOT VALID;
    END IF;
END $$;

CREATE UNIQUE INDEX IF NOT EXISTS transactions_external_ref_unique_per_program
    ON transactions (program_id, external_ref) WHERE external_ref IS NOT NULL;
CREATE INDEX IF NOT EXISTS transactions_pass_id_created_at_idx
    ON transactions (pass_id, created_at DESC);

-- A REDEEM / CHECK_IN row may be inserted with just pass_id, program_id and kind; fill in
-- the program from the pass when it is missing so Softr forms can omit it too.
CREATE OR REPLACE FUNCTION loyaltyd_fill_transaction_program() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.program_id IS NULL THEN
        SELECT program_id INTO NEW.program_id FROM passes_master WHERE id = NEW.pass_id;
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS transactions_fill_program_id ON transactions;
CREATE TRIGGER transactions_fill_program_id
    BEFORE INSERT ON transactions
    FOR EACH ROW EXECUTE FUNCTION loyaltyd_fill_transaction_program();

-- An older version of the function may exist with another return type; CREATE OR REPLACE
-- cannot change that, so drop exactly our signature first.
DROP FUNCTION IF EXISTS process_membership_transaction(uuid, integer, text, text, text);

CREATE FUNCTION process_membership_transaction(
    p_pass_id uuid,
    p_points integer,
    p_kind text DEFAULT 'ADJUST',
    p_message text DEFAULT NULL,
    p_external_ref text DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_pass passes_master%ROWTYPE;
    v_tx transactions%ROWTYPE;
    v_balance integer;
BEGIN
    SELECT * INTO v_pass FROM passes_master WHERE id = p_pass_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pass % does not exist', p_pass_id USING ERRCODE = 'no_data_found';
    END IF;
    IF v_pass.protocol <> 'MEMBERSHIP' THEN
        RAISE EXCEPTION 'pass % is a % pass; points only move on MEMBERSHIP passes',
            p_pass_id, v_pass.protocol USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_kind IS NULL OR p_kind NOT IN ('EARN', 'BURN', 'ADJUST', 'BIRTHDAY') THEN
        RAISE EXCEPTION 'kind must be EARN, BURN, ADJUST or BIRTHDAY, not %', coalesce(p_kind, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_points IS NULL THEN
        RAISE EXCEPTION 'points must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF p_external_ref IS NOT NULL THEN
        -- Serialise callers sharing a reference so the second one sees the first's row.
        PERFORM pg_advisory_xact_lock(
            hashtextextended(v_pass.program_id::text || '/' || p_external_ref, 7));
        SELECT * INTO v_tx FROM transactions
         WHERE program_id = v_pass.program_id AND external_ref = p_external_ref;
        IF FOUND THEN
            RETURN loyaltyd_transaction_result(v_tx, v_pass, true);
        END IF;
    END IF;

    INSERT INTO protocol_membership (pass_id) VALUES (p_pass_id) ON CONFLICT DO NOTHING;
    SELECT points_balance INTO v_balance FROM protocol_membership
     WHERE pass_id = p_pass_id FOR UPDATE;
    IF v_balance + p_points < 0 THEN
        RAISE EXCEPTION 'insufficient points on pass %: balance %, change %',
            p_pass_id, v_balance, p_points
            USING ERRCODE = 'check_violation',
                  HINT = 'a burn may not take the balance below zero';
    END IF;

    UPDATE protocol_membership
       SET points_balance = points_balance + p_points,
           -- tier points count what was earned, never what was spent
           tier_points = tier_points + CASE WHEN p_kind IN ('EARN', 'BIRTHDAY')
                                            THEN greatest(p_points, 0) ELSE 0 END
     WHERE pass_id = p_pass_id
     RETURNING points_balance INTO v_balance;

    INSERT INTO transactions (pass_id, program_id, kind, points_delta, balance_after,
                              notification_message, external_ref)
    VALUES (p_pass_id, v_pass.program_id, p_kind, p_points, v_balance, p_message, p_external_ref)
    RETURNING * INTO v_tx;
    RETURN loyaltyd_transaction_result(v_tx, v_pass, false);
END $$;

CREATE OR REPLACE FUNCTION loyaltyd_transaction_result(
    tx transactions, pass passes_master, replayed boolean
) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'transaction_id', tx.id,
        'pass_id', tx.pass_id,
        'program_id', tx.program_id,
        'passkit_internal_id', pass.passkit_internal_id,
        'protocol', pass.protocol,
        'kind', tx.kind,
        'points_delta', tx.points_delta,
        'new_balance', tx.balance_after,
        'notification_message', tx.notification_message,
        'external_ref', tx.external_ref,
        'replayed', replayed)
$$;

COMMENT ON FUNCTION process_membership_transaction(uuid, integer, text, text, text) IS
    'Atomically applies a signed points delta to a MEMBERSHIP pass and writes the ledger row. '
    'Replaying an external_ref returns the first result unchanged.';
