-- The points ledger: the transactions table (process_membership_transaction, the one atomic way
-- to move points, lives in 050_loyaltyd_schema.sql).

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

-- The ledger function itself, process_membership_transaction, is created by
-- 050_loyaltyd_schema.sql in loyaltyd's own schema, next to a public entry point only where the
-- name is free: a user's function of that name is never replaced, dropped or shadowed.
