-- Campaign audit trail (seed 001) plus the campaign link and skip count, readable by a
-- program's admins under row-level security when running on Supabase.

CREATE TABLE IF NOT EXISTS notification_logs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid()
);
ALTER TABLE notification_logs
    ADD COLUMN IF NOT EXISTS program_id uuid REFERENCES programs (id),
    ADD COLUMN IF NOT EXISTS campaign_name text,
    ADD COLUMN IF NOT EXISTS recipient_count integer DEFAULT 0,
    ADD COLUMN IF NOT EXISTS success_count integer DEFAULT 0,
    ADD COLUMN IF NOT EXISTS failed_count integer DEFAULT 0,
    ADD COLUMN IF NOT EXISTS skipped_count integer DEFAULT 0,
    ADD COLUMN IF NOT EXISTS message_content text,
    ADD COLUMN IF NOT EXISTS target_segment text,
    ADD COLUMN IF NOT EXISTS campaign_id uuid,
    ADD COLUMN IF NOT EXISTS created_at timestamptz DEFAULT now();

-- One audit row per campaign, even if two daemons race to finish it.
CREATE UNIQUE INDEX IF NOT EXISTS notification_logs_one_per_campaign
    ON notification_logs (campaign_id) WHERE campaign_id IS NOT NULL;

ALTER TABLE notification_logs ENABLE ROW LEVEL SECURITY;

-- auth.uid() exists only on Supabase; on plain Postgres the policy is skipped (RLS still on,
-- and table owners such as the daemon bypass it).
DO $$
BEGIN
    IF to_regprocedure('auth.uid()') IS NULL THEN
        RAISE NOTICE 'auth.uid() not found: skipping the Supabase admin policy';
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_policies
                   WHERE tablename = 'notification_logs'
                     AND policyname = 'admins view their program''s logs') THEN
        EXECUTE $p$
            CREATE POLICY "admins view their program's logs" ON notification_logs
            FOR SELECT USING (
                program_id IN (SELECT program_id FROM admin_profiles WHERE id = auth.uid()))
        $p$;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        GRANT SELECT ON notification_logs TO authenticated;
    END IF;
END $$;
