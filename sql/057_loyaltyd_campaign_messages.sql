-- Campaigns sent through PassKit's Messages API (PASSKIT_CAMPAIGN_DELIVERY=messages, a text
-- with no per-recipient placeholder): one row per such campaign, written when it starts, with
-- the PassKit message created for it once (the first chunk sent creates it). Its recipients
-- are still one row each in loyaltyd.campaign_deliveries, sent in chunks and recorded
-- together; a campaign without a row here is sent one pass at a time.

CREATE TABLE IF NOT EXISTS loyaltyd.campaign_messages (
    campaign_id uuid PRIMARY KEY REFERENCES push_campaigns (id) ON DELETE CASCADE,
    passkit_message_id text,
    created_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE loyaltyd.campaign_messages IS
    'Campaigns delivered through PassKit''s Messages API, and the message created for each.';

DO $$
DECLARE
    r text;
BEGIN
    REVOKE ALL ON loyaltyd.campaign_messages FROM PUBLIC;
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON loyaltyd.campaign_messages FROM %I', r);
        END IF;
    END LOOP;
END $$;
