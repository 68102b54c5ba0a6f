-- What Softr and admins read, exposed on purpose and scoped to their program: the campaign
-- progress view and the recipients of a campaign, both as security_invoker views, so the
-- reader's own privileges and row-level security apply. On Supabase (where auth.uid()
-- exists) push_campaigns and the deliveries carry RLS policies that let a signed-in admin see
-- and write only their program's campaigns (admin_profiles); anon gets nothing at all.

-- Recipients of a campaign, read-only: who got what, and why not.
CREATE OR REPLACE VIEW public.campaign_deliveries AS
SELECT d.campaign_id, d.pass_id, d.state, d.attempts, d.rendered_text, d.error, d.finished_at
  FROM loyaltyd.campaign_deliveries d;
COMMENT ON VIEW public.campaign_deliveries IS
    'Recipients of each push campaign: pending / claimed / sent / failed / skipped, with the text sent and the reason.';

CREATE OR REPLACE VIEW public.push_campaign_progress AS
SELECT
    c.id,
    c.program_id,
    c.name,
    c.status,
    c.segment,
    c.scheduled_at,
    c.started_at,
    c.finished_at,
    coalesce(c.recipient_count, 0) AS recipient_count,
    coalesce(c.sent_count, 0) AS sent_count,
    coalesce(c.failed_count, 0) AS failed_count,
    coalesce(c.skipped_count, 0) AS skipped_count,
    greatest(coalesce(c.recipient_count, 0) - done.n, 0) AS remaining_count,
    CASE
        WHEN c.status = 'COMPLETED' THEN 100.0
        WHEN coalesce(c.recipient_count, 0) = 0 THEN 0.0
        ELSE round(100.0 * least(done.n, c.recipient_count) / c.recipient_count, 1)
    END AS progress_percent,
    c.error,
    c.unknown_member_count,
    c.created_at
FROM public.push_campaigns c
CROSS JOIN LATERAL (
    SELECT coalesce(c.sent_count, 0) + coalesce(c.failed_count, 0)
           + coalesce(c.skipped_count, 0) AS n
) done;

DO $$
DECLARE
    supabase boolean := to_regprocedure('auth.uid()') IS NOT NULL;
    admin_programs text :=
        'program_id IN (SELECT a.program_id FROM public.admin_profiles a WHERE a.id = auth.uid())';
BEGIN
    -- security_invoker exists from Postgres 15 (Supabase runs 15 or later); on 14 the views
    -- keep their owner's rights, as views always did there.
    IF current_setting('server_version_num')::int >= 150000 THEN
        ALTER VIEW public.campaign_deliveries SET (security_invoker = true);
        ALTER VIEW public.push_campaign_progress SET (security_invoker = true);
    END IF;
    REVOKE ALL ON public.campaign_deliveries, public.push_campaign_progress FROM PUBLIC;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON public.campaign_deliveries, public.push_campaign_progress,
                      public.push_campaigns FROM anon;
    END IF;
    IF NOT supabase THEN
        RAISE NOTICE 'auth.uid() not found: no admin policies (plain Postgres: grant as you need)';
        RETURN;
    END IF;

    ALTER TABLE public.push_campaigns ENABLE ROW LEVEL SECURITY;
    ALTER TABLE loyaltyd.campaign_deliveries ENABLE ROW LEVEL SECURITY;

    DROP POLICY IF EXISTS "loyaltyd: admins read their program's campaigns" ON public.push_campaigns;
    EXECUTE format('CREATE POLICY "loyaltyd: admins read their program''s campaigns"
        ON public.push_campaigns FOR SELECT TO authenticated USING (%s)', admin_programs);
    DROP POLICY IF EXISTS "loyaltyd: admins add campaigns to their program" ON public.push_campaigns;
    EXECUTE format('CREATE POLICY "loyaltyd: admins add campaigns to their program"
        ON public.push_campaigns FOR INSERT TO authenticated WITH CHECK (%s)', admin_programs);
    DROP POLICY IF EXISTS "loyaltyd: admins edit their program's campaigns" ON public.push_campaigns;
    EXECUTE format('CREATE POLICY "loyaltyd: admins edit their program''s campaigns"
        ON public.push_campaigns FOR UPDATE TO authenticated USING (%s) WITH CHECK (%s)',
        admin_programs, admin_programs);
    DROP POLICY IF EXISTS "loyaltyd: admins delete unsent campaigns" ON public.push_campaigns;
    EXECUTE format('CREATE POLICY "loyaltyd: admins delete unsent campaigns"
        ON public.push_campaigns FOR DELETE TO authenticated USING (started_at IS NULL AND %s)',
        admin_programs);

    DROP POLICY IF EXISTS "loyaltyd: admins read their program's recipients"
        ON loyaltyd.campaign_deliveries;
    CREATE POLICY "loyaltyd: admins read their program's recipients"
        ON loyaltyd.campaign_deliveries FOR SELECT TO authenticated
        USING (campaign_id IN (SELECT c.id FROM public.push_campaigns c));  -- c under its RLS

    -- The views run as the reader: a signed-in admin needs to reach the rows beneath, which
    -- the policies above then narrow to their program. Nothing else of loyaltyd.
    GRANT USAGE ON SCHEMA loyaltyd TO authenticated;
    GRANT SELECT ON loyaltyd.campaign_deliveries TO authenticated;
    GRANT SELECT ON public.campaign_deliveries, public.push_campaign_progress TO authenticated;
    GRANT SELECT, INSERT, UPDATE, DELETE ON public.push_campaigns TO authenticated;
    RAISE NOTICE 'push_campaigns and campaign recipients: row-level security for admins of each program; nothing for anon';
END $$;
