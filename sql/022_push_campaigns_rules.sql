-- Named rules on push_campaigns that a FAILED (or CANCELLED) row is allowed to break.
--
-- A CHECK is tested on every UPDATE of a row, whatever the columns changed. A row that
-- predates a NOT VALID rule (the user's Supabase data) and breaks it could then never be
-- marked FAILED by the daemon, and would block the planner forever. So each input rule holds
-- for campaigns that may still be sent, and a FAILED or CANCELLED row keeps what the admin
-- wrote, untouched, next to the `error` saying what is wrong with it. The database still
-- refuses a bad row first when it is written as DRAFT or PENDING.

CREATE OR REPLACE FUNCTION pg_temp.replace_campaign_rule(name text, expr text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE push_campaigns DROP CONSTRAINT IF EXISTS %I', name);
    EXECUTE format(
        'ALTER TABLE push_campaigns ADD CONSTRAINT %I CHECK (status IN (''FAILED'', ''CANCELLED'') OR (%s)) NOT VALID',
        name, expr);
END $$;

-- The rules of 006, now with the exemption.
SELECT pg_temp.replace_campaign_rule('push_campaigns_message_1_to_500_chars',
    $$char_length(btrim(message_text)) BETWEEN 1 AND 500$$);
SELECT pg_temp.replace_campaign_rule('push_campaigns_segment_is_known',
    $$segment IN ('ALL', 'VIP', 'WHALE', 'SLUMBER', 'LOCAL', 'CSV')$$);
SELECT pg_temp.replace_campaign_rule('push_campaigns_thresholds_not_negative',
    $$coalesce(min_tier_points, 0) >= 0 AND coalesce(min_points, 0) >= 0
      AND coalesce(inactive_days, 1) >= 1$$);

-- New rules.
SELECT pg_temp.replace_campaign_rule('push_campaigns_message_is_not_null',
    $$message_text IS NOT NULL$$);
SELECT pg_temp.replace_campaign_rule('push_campaigns_inactive_days_up_to_3650',
    $$coalesce(inactive_days, 1) <= 3650$$);
SELECT pg_temp.replace_campaign_rule('push_campaigns_local_segment_needs_zip_codes',
    $$segment IS DISTINCT FROM 'LOCAL' OR coalesce(cardinality(zip_codes), 0) > 0$$);
SELECT pg_temp.replace_campaign_rule('push_campaigns_csv_segment_needs_member_ids_or_url',
    $$segment IS DISTINCT FROM 'CSV' OR coalesce(cardinality(member_ids), 0) > 0
      OR coalesce(btrim(csv_upload_url), '') <> ''$$);
SELECT pg_temp.replace_campaign_rule('push_campaigns_csv_url_is_https',
    $$coalesce(btrim(csv_upload_url), '') = '' OR csv_upload_url ILIKE 'https://%'$$);
