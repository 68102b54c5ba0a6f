-- push_campaigns triggers: keep a started campaign as it was sent, re-arm an edited one, ring the planner.
--
-- NOTIFY is only a doorbell (the payload is the campaign id, for logs): the planner always
-- reads the table, and polls as well, so a lost notification delays work, never loses it.

CREATE OR REPLACE FUNCTION loyaltyd_push_campaign_before_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    content_changed boolean := (NEW.program_id, NEW.message_text, NEW.segment,
        NEW.min_tier_points, NEW.min_points, NEW.inactive_days, NEW.zip_codes, NEW.member_ids,
        NEW.csv_upload_url)
        IS DISTINCT FROM (OLD.program_id, OLD.message_text, OLD.segment,
        OLD.min_tier_points, OLD.min_points, OLD.inactive_days, OLD.zip_codes, OLD.member_ids,
        OLD.csv_upload_url);
    status_changed boolean := NEW.status IS DISTINCT FROM OLD.status;
BEGIN
    NEW.updated_at := now();
    -- Recipients were fixed and messages rendered from this text: changing it half-way would
    -- make the audit trail lie about what was sent.
    IF OLD.started_at IS NOT NULL AND OLD.status IN ('PROCESSING', 'COMPLETED')
       AND content_changed THEN
        RAISE EXCEPTION 'campaign % is already sending: its message and audience can no longer change',
            OLD.id
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'push_campaigns_started_campaigns_keep_message_and_audience',
                  HINT = 'cancel it (status = ''CANCELLED'') and insert a new campaign';
    END IF;
    -- Deliveries exist once a campaign started; sending it "again" would skip everyone
    -- already recorded. A new campaign is the honest way to resend.
    IF OLD.started_at IS NOT NULL AND status_changed AND NEW.status IN ('PENDING', 'DRAFT') THEN
        RAISE EXCEPTION 'campaign % has already been sent (status %): it cannot go back to %',
            OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'push_campaigns_started_campaigns_are_not_sent_again',
                  HINT = 'insert a new campaign to send the message again';
    END IF;
    -- Put (back) to DRAFT or PENDING, or edited while there: count and validate afresh, and
    -- take the row from any daemon still working on the old version.
    IF NEW.status IN ('PENDING', 'DRAFT') AND (status_changed OR content_changed) THEN
        NEW.audience_counted_at := NULL;
        NEW.error := NULL;
        NEW.finished_at := NULL;
        NEW.lease_owner := NULL;
        NEW.lease_expires_at := NULL;
        NEW.unknown_member_count := NULL;
        NEW.unknown_member_ids := NULL;
    END IF;
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS push_campaigns_guard_and_rearm ON push_campaigns;
CREATE TRIGGER push_campaigns_guard_and_rearm
    BEFORE UPDATE ON push_campaigns
    FOR EACH ROW EXECUTE FUNCTION loyaltyd_push_campaign_before_update();

CREATE OR REPLACE FUNCTION loyaltyd_ring_campaign_planner() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('loyaltyd_campaigns', NEW.id::text);
    RETURN NULL;
END $$;

-- Work for the planner: a campaign to send or count, or one to stop.
DROP TRIGGER IF EXISTS push_campaigns_ring_planner_on_insert ON push_campaigns;
CREATE TRIGGER push_campaigns_ring_planner_on_insert
    AFTER INSERT ON push_campaigns
    FOR EACH ROW WHEN (NEW.status IN ('PENDING', 'DRAFT', 'CANCELLED'))
    EXECUTE FUNCTION loyaltyd_ring_campaign_planner();

DROP TRIGGER IF EXISTS push_campaigns_ring_planner_on_change ON push_campaigns;
CREATE TRIGGER push_campaigns_ring_planner_on_change
    AFTER UPDATE ON push_campaigns
    FOR EACH ROW WHEN (NEW.status IN ('PENDING', 'DRAFT', 'CANCELLED') AND (
        NEW.status IS DISTINCT FROM OLD.status
        OR NEW.scheduled_at IS DISTINCT FROM OLD.scheduled_at
        OR (NEW.audience_counted_at IS NULL AND OLD.audience_counted_at IS NOT NULL)))
    EXECUTE FUNCTION loyaltyd_ring_campaign_planner();

-- Every recipient has an outcome: the planner marks the campaign COMPLETED and writes the
-- audit row. Rung by the statement that recorded the last outcome.
DROP TRIGGER IF EXISTS push_campaigns_ring_planner_when_drained ON push_campaigns;
CREATE TRIGGER push_campaigns_ring_planner_when_drained
    AFTER UPDATE OF sent_count, failed_count, skipped_count ON push_campaigns
    FOR EACH ROW WHEN (
        NEW.started_at IS NOT NULL AND NEW.finished_at IS NULL
        AND NEW.status IN ('PROCESSING', 'CANCELLED')
        AND coalesce(NEW.sent_count, 0) + coalesce(NEW.failed_count, 0)
            + coalesce(NEW.skipped_count, 0) >= coalesce(NEW.recipient_count, 0))
    EXECUTE FUNCTION loyaltyd_ring_campaign_planner();
