-- The push campaign queue table (seed 003) with segments, schedule, live counters and the
-- named rules Softr users see when a row is refused.

-- History is history: rows already in the table when loyaltyd first adapts it were written
-- for an earlier tool (which left them PENDING after sending them). They are marked
-- `predates_loyaltyd`, keep their counters, and are never planned or sent.
DO $$
DECLARE
    n bigint;
BEGIN
    IF to_regclass('push_campaigns') IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('push_campaigns')
           AND attname = 'predates_loyaltyd' AND NOT attisdropped) THEN
        ALTER TABLE push_campaigns ADD COLUMN predates_loyaltyd boolean NOT NULL DEFAULT true;
        ALTER TABLE push_campaigns ALTER COLUMN predates_loyaltyd SET DEFAULT false;
        SELECT count(*) INTO n FROM push_campaigns;
        RAISE NOTICE 'push_campaigns: % existing rows predate loyaltyd and are kept as history (predates_loyaltyd = true), never sent', n;
    END IF;
END $$;

CREATE TABLE IF NOT EXISTS push_campaigns (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid()
);
ALTER TABLE push_campaigns
    ADD COLUMN IF NOT EXISTS program_id uuid,
    ADD COLUMN IF NOT EXISTS name text,
    ADD COLUMN IF NOT EXISTS message_text text,
    ADD COLUMN IF NOT EXISTS target_query text,
    ADD COLUMN IF NOT EXISTS csv_upload_url text,
    ADD COLUMN IF NOT EXISTS status text DEFAULT 'PENDING',
    ADD COLUMN IF NOT EXISTS recipient_count integer DEFAULT 0,
    ADD COLUMN IF NOT EXISTS sent_count integer DEFAULT 0,
    ADD COLUMN IF NOT EXISTS failed_count integer DEFAULT 0,
    ADD COLUMN IF NOT EXISTS skipped_count integer DEFAULT 0,
    ADD COLUMN IF NOT EXISTS segment text DEFAULT 'ALL',
    ADD COLUMN IF NOT EXISTS min_tier_points integer DEFAULT 1000,
    ADD COLUMN IF NOT EXISTS min_points integer DEFAULT 500,
    ADD COLUMN IF NOT EXISTS inactive_days integer DEFAULT 30,
    ADD COLUMN IF NOT EXISTS zip_codes text[],
    ADD COLUMN IF NOT EXISTS member_ids text[],
    ADD COLUMN IF NOT EXISTS scheduled_at timestamptz,
    ADD COLUMN IF NOT EXISTS error text,
    ADD COLUMN IF NOT EXISTS started_at timestamptz,
    ADD COLUMN IF NOT EXISTS finished_at timestamptz,
    ADD COLUMN IF NOT EXISTS created_at timestamptz DEFAULT now(),
    ADD COLUMN IF NOT EXISTS updated_at timestamptz DEFAULT now(),
    ADD COLUMN IF NOT EXISTS predates_loyaltyd boolean NOT NULL DEFAULT false;

ALTER TABLE push_campaigns ALTER COLUMN status SET DEFAULT 'PENDING';
ALTER TABLE push_campaigns ALTER COLUMN segment SET DEFAULT 'ALL';

CREATE OR REPLACE FUNCTION pg_temp.add_check(name text, expr text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'push_campaigns'::regclass AND conname = name) THEN
        EXECUTE format('ALTER TABLE push_campaigns ADD CONSTRAINT %I CHECK (%s) NOT VALID',
                       name, expr);
    END IF;
END $$;

SELECT pg_temp.add_check('push_campaigns_status_is_known',
    $$status IN ('DRAFT', 'PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED')$$);
SELECT pg_temp.add_check('push_campaigns_message_1_to_500_chars',
    $$char_length(btrim(message_text)) BETWEEN 1 AND 500$$);
SELECT pg_temp.add_check('push_campaigns_segment_is_known',
    $$segment IN ('ALL', 'VIP', 'WHALE', 'SLUMBER', 'LOCAL', 'CSV')$$);
SELECT pg_temp.add_check('push_campaigns_thresholds_not_negative',
    $$coalesce(min_tier_points, 0) >= 0 AND coalesce(min_points, 0) >= 0
      AND coalesce(inactive_days, 1) >= 1$$);
SELECT pg_temp.add_check('push_campaigns_counters_not_negative',
    $$coalesce(recipient_count, 0) >= 0 AND coalesce(sent_count, 0) >= 0
      AND coalesce(failed_count, 0) >= 0 AND coalesce(skipped_count, 0) >= 0$$);

CREATE INDEX IF NOT EXISTS push_campaigns_open_idx ON push_campaigns (scheduled_at)
    WHERE status IN ('DRAFT', 'PENDING', 'PROCESSING') AND NOT predates_loyaltyd;
