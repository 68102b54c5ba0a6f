-- A campaign whose recipients all get the same text stores it once, on the campaign: a sent
-- delivery keeps rendered_text only when it differs from push_campaigns.message_text, and the
-- view of the recipients shows the text as sent either way.

CREATE OR REPLACE VIEW public.campaign_deliveries AS
SELECT d.campaign_id, d.pass_id, d.state, d.attempts,
       CASE WHEN d.state = 'sent' THEN coalesce(d.rendered_text, c.message_text)
            ELSE d.rendered_text END AS rendered_text,
       d.error, d.finished_at
  FROM loyaltyd.campaign_deliveries d
  LEFT JOIN public.push_campaigns c ON c.id = d.campaign_id;
COMMENT ON VIEW public.campaign_deliveries IS
    'Recipients of each push campaign: pending / claimed / sent / failed / skipped, with the text sent and the reason.';

DO $$
BEGIN
    -- Replacing a view resets its options: the reader's rights apply again (as in 051).
    IF current_setting('server_version_num')::int >= 150000 THEN
        ALTER VIEW public.campaign_deliveries SET (security_invoker = true);
    END IF;
END $$;

COMMENT ON COLUMN loyaltyd.campaign_deliveries.rendered_text IS
    'The message as sent to this recipient, when it differs from the campaign''s message_text (NULL: that text).';
