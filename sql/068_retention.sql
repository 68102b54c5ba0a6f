-- History has a retention rule: finished campaign deliveries and idle pass syncs older than
-- LOYALTYD_DELIVERY_RETENTION_DAYS / LOYALTYD_SYNC_RETENTION_DAYS are removed in the
-- background, in small batches, by one daemon at a time. Campaign rows and their counters,
-- notification_logs, transactions and birthday_logs are never touched.

-- How far each table's removal has got: deliveries of campaigns finished before
-- `purged_through` are gone.
CREATE TABLE IF NOT EXISTS loyaltyd.retention (
    name text PRIMARY KEY,
    purged_through timestamptz NOT NULL DEFAULT '-infinity',
    last_run_at timestamptz,
    removed bigint NOT NULL DEFAULT 0,
    CONSTRAINT retention_name_is_known CHECK (name IN ('campaign_deliveries', 'pass_syncs'))
);
INSERT INTO loyaltyd.retention (name) VALUES ('campaign_deliveries'), ('pass_syncs')
ON CONFLICT (name) DO NOTHING;

COMMENT ON TABLE loyaltyd.retention IS
    'How far loyaltyd''s removal of old history has got, per table (written by the daemons).';

-- Campaigns in the order they finished: which ones' deliveries are due for removal.
CREATE INDEX IF NOT EXISTS push_campaigns_finished_at_idx
    ON public.push_campaigns (finished_at) WHERE finished_at IS NOT NULL;

-- Idle pass syncs by age: the ones due for removal, and the oldest kept.
CREATE INDEX IF NOT EXISTS pass_syncs_idle_idx
    ON loyaltyd.pass_syncs (updated_at) WHERE state = 'idle';

DO $$
DECLARE
    r text;
BEGIN
    REVOKE ALL ON loyaltyd.retention FROM PUBLIC;
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON loyaltyd.retention FROM %I', r);
        END IF;
    END LOOP;
END $$;
