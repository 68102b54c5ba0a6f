-- Daemon-owned columns of push_campaigns belong to the daemon. No-code edit forms write back
-- every field they loaded; renaming a running campaign that way must not turn back its
-- counters or its status. So, for every writer but loyaltyd's own connections (whose
-- application_name starts with 'loyaltyd', as the daemon's pool sets it):
--
-- * status: the admin's transitions are DRAFT <-> PENDING (and back from FAILED / CANCELLED)
--   before sending starts, and -> CANCELLED while not finished. A status the campaign has
--   already moved past (PENDING or PROCESSING written onto a running or finished campaign) is
--   a stale write-back: ignored. Anything else is refused
--   (push_campaigns_status_transitions_belong_to_loyaltyd).
-- * sent_count, failed_count, skipped_count only grow: a value at or below the current one is
--   stale and ignored, a higher one refused (push_campaigns_counters_belong_to_loyaltyd).
-- * recipient_count is loyaltyd's count (an estimate for a DRAFT, fixed at start): whatever a
--   form writes there is a value it loaded earlier, and is ignored.
-- * started_at, finished_at, error: a NULL or the current value is ignored; another value is
--   refused (push_campaigns_results_belong_to_loyaltyd).
-- * The daemon's bookkeeping (lease, audience count marker, unknown member ids) is kept.
-- * predates_loyaltyd never changes: history stays history (push_campaigns_history_stays_history).
-- * A new row starts with zero counters and no results, whatever the form sent.
-- * Every writer's message is stored trimmed: what is counted is what is sent.
--
-- This is a guard against write-backs, not a security boundary: SQL users who can set
-- application_name are trusted like the daemon; Softr and the Data API cannot.

ALTER TABLE public.push_campaigns
    ADD COLUMN IF NOT EXISTS predates_loyaltyd boolean NOT NULL DEFAULT false;

CREATE OR REPLACE FUNCTION loyaltyd.written_by_loyaltyd() RETURNS boolean
LANGUAGE sql STABLE SET search_path = '' AS $$
    SELECT pg_catalog.current_setting('application_name') LIKE 'loyaltyd%'
$$;

CREATE OR REPLACE FUNCTION loyaltyd.campaign_status_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path = '' AS $$
    SELECT CASE status WHEN 'DRAFT' THEN 0 WHEN 'PENDING' THEN 0 WHEN 'PROCESSING' THEN 1
                       ELSE 2 END
$$;

CREATE OR REPLACE FUNCTION loyaltyd.refuse_campaign_write(rule text, what text, id uuid)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    RAISE EXCEPTION 'campaign %: % belongs to loyaltyd', id, what
        USING ERRCODE = 'check_violation', CONSTRAINT = rule,
              HINT = 'edit name, message, audience or schedule; set status to CANCELLED to stop it';
END $$;

CREATE OR REPLACE FUNCTION loyaltyd.guard_campaign_columns(p_new public.push_campaigns,
                                                           p_old public.push_campaigns)
RETURNS public.push_campaigns
LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
    started boolean := p_old.started_at IS NOT NULL;
BEGIN
    -- (recipient_count: see the header; always the daemon's)
    IF p_new.predates_loyaltyd IS DISTINCT FROM p_old.predates_loyaltyd THEN
        RAISE EXCEPTION 'campaign % predates loyaltyd and stays history', p_old.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'push_campaigns_history_stays_history',
                  HINT = 'to send it on purpose, insert a new campaign with its text';
    END IF;

    IF p_new.status IS DISTINCT FROM p_old.status THEN
        IF (NOT started AND p_old.status IN ('DRAFT', 'PENDING', 'FAILED', 'CANCELLED')
                AND p_new.status IN ('DRAFT', 'PENDING'))
           OR (p_new.status = 'CANCELLED' AND p_old.status IN ('DRAFT', 'PENDING', 'PROCESSING')) THEN
            NULL;  -- the admin's own transitions
        ELSIF p_new.status IS NULL
              OR loyaltyd.campaign_status_rank(p_new.status) < loyaltyd.campaign_status_rank(p_old.status)
        THEN
            p_new.status := p_old.status;  -- stale write-back
        ELSE
            PERFORM loyaltyd.refuse_campaign_write(
                'push_campaigns_status_transitions_belong_to_loyaltyd',
                format('status %s -> %s', p_old.status, p_new.status), p_old.id);
        END IF;
    END IF;

    IF coalesce(p_new.sent_count, 0) > coalesce(p_old.sent_count, 0)
       OR coalesce(p_new.failed_count, 0) > coalesce(p_old.failed_count, 0)
       OR coalesce(p_new.skipped_count, 0) > coalesce(p_old.skipped_count, 0) THEN
        PERFORM loyaltyd.refuse_campaign_write('push_campaigns_counters_belong_to_loyaltyd',
            'sent_count, failed_count and skipped_count', p_old.id);
    END IF;
    p_new.sent_count := p_old.sent_count;
    p_new.failed_count := p_old.failed_count;
    p_new.skipped_count := p_old.skipped_count;

    IF (p_new.started_at IS NOT NULL AND p_new.started_at IS DISTINCT FROM p_old.started_at)
       OR (p_new.finished_at IS NOT NULL AND p_new.finished_at IS DISTINCT FROM p_old.finished_at)
       OR (p_new.error IS NOT NULL AND p_new.error IS DISTINCT FROM p_old.error) THEN
        PERFORM loyaltyd.refuse_campaign_write('push_campaigns_results_belong_to_loyaltyd',
            'started_at, finished_at and error', p_old.id);
    END IF;
    p_new.recipient_count := p_old.recipient_count;
    p_new.started_at := p_old.started_at;
    p_new.finished_at := p_old.finished_at;
    p_new.error := p_old.error;
    p_new.lease_owner := p_old.lease_owner;
    p_new.lease_expires_at := p_old.lease_expires_at;
    p_new.audience_counted_at := p_old.audience_counted_at;
    p_new.unknown_member_count := p_old.unknown_member_count;
    p_new.unknown_member_ids := p_old.unknown_member_ids;
    RETURN p_new;
END $$;

-- 023's trigger, now guarding the daemon's columns first.
-- Definer: an admin's update reaches loyaltyd's helpers without any privilege on them.
CREATE OR REPLACE FUNCTION loyaltyd.push_campaign_before_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
    content_changed boolean;
    status_changed boolean;
BEGIN
    IF NOT loyaltyd.written_by_loyaltyd() THEN
        NEW := loyaltyd.guard_campaign_columns(NEW, OLD);
    END IF;
    IF NEW.message_text IS DISTINCT FROM OLD.message_text THEN
        NEW.message_text := pg_catalog.regexp_replace(NEW.message_text, '^\s+|\s+$', '', 'g');
    END IF;
    content_changed := (NEW.program_id, NEW.message_text, NEW.segment,
        NEW.min_tier_points, NEW.min_points, NEW.inactive_days, NEW.zip_codes, NEW.member_ids,
        NEW.csv_upload_url)
        IS DISTINCT FROM (OLD.program_id, OLD.message_text, OLD.segment,
        OLD.min_tier_points, OLD.min_points, OLD.inactive_days, OLD.zip_codes, OLD.member_ids,
        OLD.csv_upload_url);
    status_changed := NEW.status IS DISTINCT FROM OLD.status;
    NEW.updated_at := pg_catalog.now();
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
DROP TRIGGER IF EXISTS push_campaigns_guard_and_rearm ON public.push_campaigns;
CREATE TRIGGER push_campaigns_guard_and_rearm
    BEFORE UPDATE ON public.push_campaigns
    FOR EACH ROW EXECUTE FUNCTION loyaltyd.push_campaign_before_update();
DROP FUNCTION IF EXISTS public.loyaltyd_push_campaign_before_update();

-- A new row from a form starts clean: zero counters, no results, not history.
CREATE OR REPLACE FUNCTION loyaltyd.push_campaign_before_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
    NEW.message_text := pg_catalog.regexp_replace(NEW.message_text, '^\s+|\s+$', '', 'g');
    IF loyaltyd.written_by_loyaltyd() THEN
        RETURN NEW;
    END IF;
    IF NEW.status IS NOT NULL AND NEW.status NOT IN ('DRAFT', 'PENDING', 'CANCELLED') THEN
        PERFORM loyaltyd.refuse_campaign_write(
            'push_campaigns_status_transitions_belong_to_loyaltyd',
            format('a new campaign''s status (%s; use DRAFT or PENDING)', NEW.status), NEW.id);
    END IF;
    NEW.recipient_count := 0;
    NEW.sent_count := 0;
    NEW.failed_count := 0;
    NEW.skipped_count := 0;
    NEW.started_at := NULL;
    NEW.finished_at := NULL;
    NEW.error := NULL;
    NEW.lease_owner := NULL;
    NEW.lease_expires_at := NULL;
    NEW.audience_counted_at := NULL;
    NEW.unknown_member_count := NULL;
    NEW.unknown_member_ids := NULL;
    NEW.predates_loyaltyd := false;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS push_campaigns_start_clean ON public.push_campaigns;
CREATE TRIGGER push_campaigns_start_clean
    BEFORE INSERT ON public.push_campaigns
    FOR EACH ROW EXECUTE FUNCTION loyaltyd.push_campaign_before_insert();

-- History rows keep what the old tool wrote: the input rules (006, 022) hold for campaigns
-- that may still be sent, not for rows that predate loyaltyd.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
              WHERE conrelid = 'public.push_campaigns'::regclass AND contype = 'c'
                AND pg_get_constraintdef(oid) NOT LIKE '%predates_loyaltyd%' LOOP
        EXECUTE format('ALTER TABLE public.push_campaigns DROP CONSTRAINT %I', c.conname);
        EXECUTE format('ALTER TABLE public.push_campaigns ADD CONSTRAINT %I CHECK (predates_loyaltyd OR (%s)) NOT VALID',
                       c.conname, substring(c.def FROM '^CHECK \((.*)\)( NOT VALID)?$'));
    END LOOP;
END $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA loyaltyd FROM PUBLIC;
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA loyaltyd FROM %I', r);
        END IF;
    END LOOP;
END $$;
