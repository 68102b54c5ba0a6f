-- loyaltyd's internals move to their own schema, out of reach of Supabase's Data API and its
-- anon/authenticated roles: the queues, the ledger function and every helper, each pinning
-- search_path = '' and naming schemas. Trigger functions that write the queues are SECURITY
-- DEFINER, so whoever inserts a transaction needs no privilege on them. EXECUTE is revoked from
-- PUBLIC. A user's own process_membership_transaction is never replaced, dropped or shadowed.
--
-- Renamed for Softr / SQL users: pass_syncs and campaign_deliveries now live in schema
-- loyaltyd (public.campaign_deliveries becomes a read-only view, 051); push_campaign_audience()
-- is loyaltyd.push_campaign_audience(). The README's "Supabase" section lists them.

CREATE SCHEMA IF NOT EXISTS loyaltyd;
REVOKE ALL ON SCHEMA loyaltyd FROM PUBLIC;
COMMENT ON SCHEMA loyaltyd IS 'loyaltyd''s queues, ledgers and helpers; not for the Data API.';

ALTER TABLE IF EXISTS public.pass_syncs SET SCHEMA loyaltyd;
ALTER TABLE IF EXISTS public.campaign_deliveries SET SCHEMA loyaltyd;

-- --- helpers of the core tables ------------------------------------------------------------------

CREATE OR REPLACE FUNCTION loyaltyd.check_program_timezone() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names WHERE name = NEW.timezone) THEN
        RAISE EXCEPTION 'unknown timezone "%" for program % (use an IANA name like Europe/Paris)',
            NEW.timezone, NEW.id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS programs_timezone_must_be_iana ON public.programs;
CREATE TRIGGER programs_timezone_must_be_iana
    BEFORE INSERT OR UPDATE OF timezone ON public.programs
    FOR EACH ROW EXECUTE FUNCTION loyaltyd.check_program_timezone();

-- Definer: fills the program from the pass whatever the inserting role may read.
CREATE OR REPLACE FUNCTION loyaltyd.fill_transaction_program() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
    IF NEW.program_id IS NULL THEN
        SELECT p.program_id INTO NEW.program_id FROM public.passes_master p WHERE p.id = NEW.pass_id;
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS transactions_fill_program_id ON public.transactions;
CREATE TRIGGER transactions_fill_program_id
    BEFORE INSERT ON public.transactions
    FOR EACH ROW EXECUTE FUNCTION loyaltyd.fill_transaction_program();

-- --- the pass-sync queue (010) -------------------------------------------------------------------

CREATE OR REPLACE FUNCTION loyaltyd.enqueue_pass_sync(
    p_pass_id uuid, p_program_id uuid, p_kind text,
    p_points integer DEFAULT NULL, p_message text DEFAULT NULL, p_transaction_id uuid DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
    INSERT INTO loyaltyd.pass_syncs AS s (pass_id, program_id, points_balance, points_generation,
                                          message, message_transaction_id, message_generation,
                                          redeem_generation, check_in_generation)
    VALUES (p_pass_id, p_program_id,
            p_points, CASE WHEN p_kind = 'points' THEN 1 END,
            p_message, p_transaction_id, CASE WHEN p_kind = 'message' THEN 1 END,
            CASE WHEN p_kind = 'redeem' THEN 1 END,
            CASE WHEN p_kind = 'check_in' THEN 1 END)
    ON CONFLICT (pass_id) DO UPDATE SET
        generation = s.generation + 1,
        points_balance = CASE WHEN p_kind = 'points' THEN p_points ELSE s.points_balance END,
        points_generation = CASE WHEN p_kind = 'points' THEN s.generation + 1
                                 ELSE s.points_generation END,
        message = CASE WHEN p_kind = 'message' THEN p_message ELSE s.message END,
        message_transaction_id = CASE WHEN p_kind = 'message' THEN p_transaction_id
                                      ELSE s.message_transaction_id END,
        message_generation = CASE WHEN p_kind = 'message' THEN s.generation + 1
                                  ELSE s.message_generation END,
        redeem_generation = CASE WHEN p_kind = 'redeem' THEN s.generation + 1
                                 ELSE s.redeem_generation END,
        check_in_generation = CASE WHEN p_kind = 'check_in' THEN s.generation + 1
                                   ELSE s.check_in_generation END,
        state = CASE WHEN s.state = 'claimed' THEN 'claimed' ELSE 'pending' END,
        attempts = CASE WHEN s.state IN ('idle', 'dead') THEN 0 ELSE s.attempts END,
        next_attempt_at = CASE WHEN s.state IN ('idle', 'dead') THEN pg_catalog.now()
                               ELSE s.next_attempt_at END,
        enqueued_at = CASE WHEN s.state IN ('idle', 'dead') THEN pg_catalog.now()
                           ELSE s.enqueued_at END,
        updated_at = pg_catalog.now();
    -- One doorbell for the whole queue; identical payloads fold within a transaction.
    PERFORM pg_catalog.pg_notify('loyaltyd_syncs', '');
END $$;

CREATE OR REPLACE FUNCTION loyaltyd.transactions_enqueue_sync() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
    IF NEW.kind = 'REDEEM' THEN
        PERFORM loyaltyd.enqueue_pass_sync(NEW.pass_id, NEW.program_id, 'redeem');
    ELSIF NEW.kind = 'CHECK_IN' THEN
        PERFORM loyaltyd.enqueue_pass_sync(NEW.pass_id, NEW.program_id, 'check_in');
    END IF;
    IF NEW.notification_message IS NOT NULL AND pg_catalog.btrim(NEW.notification_message) <> ''
    THEN
        PERFORM loyaltyd.enqueue_pass_sync(NEW.pass_id, NEW.program_id, 'message',
                                           NULL, NEW.notification_message, NEW.id);
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS transactions_enqueue_pass_sync ON public.transactions;
CREATE TRIGGER transactions_enqueue_pass_sync
    AFTER INSERT ON public.transactions
    FOR EACH ROW EXECUTE FUNCTION loyaltyd.transactions_enqueue_sync();

CREATE OR REPLACE FUNCTION loyaltyd.membership_enqueue_sync() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
    PERFORM loyaltyd.enqueue_pass_sync(
        NEW.pass_id, (SELECT p.program_id FROM public.passes_master p WHERE p.id = NEW.pass_id),
        'points', NEW.points_balance);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS protocol_membership_enqueue_pass_sync ON public.protocol_membership;
CREATE TRIGGER protocol_membership_enqueue_pass_sync
    AFTER UPDATE OF points_balance ON public.protocol_membership
    FOR EACH ROW WHEN (OLD.points_balance IS DISTINCT FROM NEW.points_balance)
    EXECUTE FUNCTION loyaltyd.membership_enqueue_sync();

-- --- push campaigns (023, 024) -------------------------------------------------------------------

CREATE OR REPLACE FUNCTION loyaltyd.ring_campaign_planner() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    PERFORM pg_catalog.pg_notify('loyaltyd_campaigns', NEW.id::text);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS push_campaigns_ring_planner_on_insert ON public.push_campaigns;
CREATE TRIGGER push_campaigns_ring_planner_on_insert
    AFTER INSERT ON public.push_campaigns
    FOR EACH ROW WHEN (NEW.status IN ('PENDING', 'DRAFT', 'CANCELLED'))
    EXECUTE FUNCTION loyaltyd.ring_campaign_planner();
DROP TRIGGER IF EXISTS push_campaigns_ring_planner_on_change ON public.push_campaigns;
CREATE TRIGGER push_campaigns_ring_planner_on_change
    AFTER UPDATE ON public.push_campaigns
    FOR EACH ROW WHEN (NEW.status IN ('PENDING', 'DRAFT', 'CANCELLED') AND (
        NEW.status IS DISTINCT FROM OLD.status
        OR NEW.scheduled_at IS DISTINCT FROM OLD.scheduled_at
        OR (NEW.audience_counted_at IS NULL AND OLD.audience_counted_at IS NOT NULL)))
    EXECUTE FUNCTION loyaltyd.ring_campaign_planner();
DROP TRIGGER IF EXISTS push_campaigns_ring_planner_when_drained ON public.push_campaigns;
CREATE TRIGGER push_campaigns_ring_planner_when_drained
    AFTER UPDATE OF sent_count, failed_count, skipped_count ON public.push_campaigns
    FOR EACH ROW WHEN (
        NEW.started_at IS NOT NULL AND NEW.finished_at IS NULL
        AND NEW.status IN ('PROCESSING', 'CANCELLED')
        AND coalesce(NEW.sent_count, 0) + coalesce(NEW.failed_count, 0)
            + coalesce(NEW.skipped_count, 0) >= coalesce(NEW.recipient_count, 0))
    EXECUTE FUNCTION loyaltyd.ring_campaign_planner();

-- The audience of a campaign (024's rules, unchanged): active, INSTALLED passes of the program
-- whose member opted in, narrowed by segment; thresholds strict. `target_query` is never run.
CREATE OR REPLACE FUNCTION loyaltyd.push_campaign_audience(
    p_program_id uuid,
    p_segment text,
    p_min_tier_points integer DEFAULT 1000,
    p_min_points integer DEFAULT 500,
    p_inactive_days integer DEFAULT 30,
    p_zip_codes text[] DEFAULT NULL,
    p_member_ids text[] DEFAULT NULL)
RETURNS TABLE (pass_id uuid)
LANGUAGE sql STABLE SET search_path = '' AS $$
    SELECT p.id
    FROM public.passes_master p
    JOIN public.users u ON u.id = p.user_id
    LEFT JOIN public.protocol_membership m ON m.pass_id = p.id
    WHERE p_segment IN ('ALL', 'VIP', 'WHALE', 'SLUMBER', 'LOCAL')
      AND p.program_id = p_program_id
      AND p.is_active AND p.status = 'INSTALLED' AND u.marketing_opt_in IS TRUE
      AND CASE p_segment
            WHEN 'ALL' THEN true
            WHEN 'VIP' THEN m.tier_points > p_min_tier_points
            WHEN 'WHALE' THEN m.points_balance > p_min_points
            -- Quiet for `p_inactive_days`, and old enough to have been quiet that long.
            WHEN 'SLUMBER' THEN
                p.created_at <= pg_catalog.now() - pg_catalog.make_interval(days => p_inactive_days)
                AND NOT EXISTS (
                    SELECT 1 FROM public.transactions t
                    WHERE t.pass_id = p.id
                      AND t.created_at > pg_catalog.now()
                                         - pg_catalog.make_interval(days => p_inactive_days))
            WHEN 'LOCAL' THEN pg_catalog.btrim(u.zip) = ANY (p_zip_codes)
          END
    UNION ALL
    SELECT p.id
    FROM (SELECT DISTINCT pg_catalog.unnest(p_member_ids)) AS wanted (member_id)
    JOIN public.passes_master p ON p.program_id = p_program_id AND p.external_id = wanted.member_id
    JOIN public.users u ON u.id = p.user_id
    WHERE p_segment = 'CSV'
      AND p.is_active AND p.status = 'INSTALLED' AND u.marketing_opt_in IS TRUE
$$;

-- --- the ledger ----------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION loyaltyd.transaction_result(
    tx public.transactions, pass public.passes_master, replayed boolean
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = '' AS $$
    SELECT pg_catalog.jsonb_build_object(
        'transaction_id', tx.id,
        'pass_id', tx.pass_id,
        'program_id', tx.program_id,
        'passkit_internal_id', pass.passkit_internal_id,
        'protocol', pass.protocol,
        'kind', tx.kind,
        'points_delta', tx.points_delta,
        'new_balance', tx.balance_after,
        'notification_message', tx.notification_message,
        'external_ref', tx.external_ref,
        'replayed', replayed)
$$;

CREATE OR REPLACE FUNCTION loyaltyd.process_membership_transaction(
    p_pass_id uuid,
    p_points integer,
    p_kind text DEFAULT 'ADJUST',
    p_message text DEFAULT NULL,
    p_external_ref text DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
    v_pass public.passes_master%ROWTYPE;
    v_tx public.transactions%ROWTYPE;
    v_balance integer;
BEGIN
    SELECT * INTO v_pass FROM public.passes_master WHERE id = p_pass_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pass % does not exist', p_pass_id USING ERRCODE = 'no_data_found';
    END IF;
    IF v_pass.protocol <> 'MEMBERSHIP' THEN
        RAISE EXCEPTION 'pass % is a % pass; points only move on MEMBERSHIP passes',
            p_pass_id, v_pass.protocol USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_kind IS NULL OR p_kind NOT IN ('EARN', 'BURN', 'ADJUST', 'BIRTHDAY') THEN
        RAISE EXCEPTION 'kind must be EARN, BURN, ADJUST or BIRTHDAY, not %', coalesce(p_kind, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_points IS NULL THEN
        RAISE EXCEPTION 'points must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF p_external_ref IS NOT NULL THEN
        -- Serialise callers sharing a reference so the second one sees the first's row.
        PERFORM pg_catalog.pg_advisory_xact_lock(
            pg_catalog.hashtextextended(v_pass.program_id::text || '/' || p_external_ref, 7));
        SELECT * INTO v_tx FROM public.transactions
         WHERE program_id = v_pass.program_id AND external_ref = p_external_ref;
        IF FOUND THEN
            RETURN loyaltyd.transaction_result(v_tx, v_pass, true);
        END IF;
    END IF;

    INSERT INTO public.protocol_membership (pass_id) VALUES (p_pass_id) ON CONFLICT DO NOTHING;
    SELECT points_balance INTO v_balance FROM public.protocol_membership
     WHERE pass_id = p_pass_id FOR UPDATE;
    IF v_balance + p_points < 0 THEN
        RAISE EXCEPTION 'insufficient points on pass %: balance %, change %',
            p_pass_id, v_balance, p_points
            USING ERRCODE = 'check_violation',
                  HINT = 'a burn may not take the balance below zero';
    END IF;

    UPDATE public.protocol_membership
       SET points_balance = points_balance + p_points,
           -- tier points count what was earned, never what was spent
           tier_points = tier_points + CASE WHEN p_kind IN ('EARN', 'BIRTHDAY')
                                            THEN greatest(p_points, 0) ELSE 0 END
     WHERE pass_id = p_pass_id
     RETURNING points_balance INTO v_balance;

    INSERT INTO public.transactions (pass_id, program_id, kind, points_delta, balance_after,
                                     notification_message, external_ref)
    VALUES (p_pass_id, v_pass.program_id, p_kind, p_points, v_balance, p_message, p_external_ref)
    RETURNING * INTO v_tx;
    RETURN loyaltyd.transaction_result(v_tx, v_pass, false);
END $$;
COMMENT ON FUNCTION loyaltyd.process_membership_transaction(uuid, integer, text, text, text) IS
    'Atomically applies a signed points delta to a MEMBERSHIP pass and writes the ledger row. '
    'Replaying an external_ref returns the first result unchanged.';

-- Who may move points through the public entry point: a caller without Data API claims (the
-- daemon, psql, the service role) as far as its grants allow; a signed-in Data API user only
-- for a pass of a program they administer (admin_profiles).
CREATE OR REPLACE FUNCTION loyaltyd.caller_may_act_on_pass(p_pass_id uuid) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = '' AS $$
DECLARE
    v_claims jsonb;
    v_sub uuid;
BEGIN
    BEGIN
        v_claims := nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb;
        v_sub := nullif(v_claims ->> 'sub', '')::uuid;
    EXCEPTION WHEN others THEN
        RETURN false;  -- claims we cannot read are no claims of an admin
    END;
    IF v_claims IS NULL OR v_claims ->> 'role' = 'service_role' THEN
        RETURN true;
    END IF;
    RETURN v_sub IS NOT NULL AND EXISTS (
        SELECT 1 FROM public.admin_profiles a
          JOIN public.passes_master p ON p.program_id = a.program_id
         WHERE a.id = v_sub AND p.id = p_pass_id);
END $$;

-- The public entry point (the seeds' RPC), only where the name is free. A function of that
-- name that loyaltyd did not create is left exactly as it was.
DO $$
DECLARE
    f record;
    theirs text[] := '{}';
BEGIN
    FOR f IN SELECT p.oid, p.oid::regprocedure::text AS signature,
                    coalesce(obj_description(p.oid, 'pg_proc'), '') AS note
               FROM pg_proc p
              WHERE p.pronamespace = 'public'::regnamespace
                AND p.proname = 'process_membership_transaction' LOOP
        IF f.note LIKE 'Atomically applies a signed points delta%'
           OR f.note LIKE 'loyaltyd:%' THEN
            EXECUTE format('DROP FUNCTION %s', f.signature);  -- an earlier loyaltyd's own
        ELSE
            theirs := theirs || f.signature;
        END IF;
    END LOOP;
    IF cardinality(theirs) > 0 THEN
        RAISE NOTICE 'found %, not created by loyaltyd: left exactly as it is; loyaltyd uses loyaltyd.process_membership_transaction',
            array_to_string(theirs, ' and ');
        RETURN;
    END IF;
    CREATE FUNCTION public.process_membership_transaction(
        p_pass_id uuid,
        p_points integer,
        p_kind text DEFAULT 'ADJUST',
        p_message text DEFAULT NULL,
        p_external_ref text DEFAULT NULL
    ) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $body$
    BEGIN
        IF NOT loyaltyd.caller_may_act_on_pass(p_pass_id) THEN
            RAISE EXCEPTION 'not allowed to move points on pass %', p_pass_id
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'only an admin of the pass''s program (admin_profiles) may';
        END IF;
        RETURN loyaltyd.process_membership_transaction(
            p_pass_id, p_points, p_kind, p_message, p_external_ref);
    END $body$;
    COMMENT ON FUNCTION public.process_membership_transaction(uuid, integer, text, text, text) IS
        'loyaltyd: the points ledger (loyaltyd.process_membership_transaction) for callers allowed to act on the pass''s program.';
    REVOKE ALL ON FUNCTION public.process_membership_transaction(uuid, integer, text, text, text)
        FROM PUBLIC;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON FUNCTION public.process_membership_transaction(uuid, integer, text, text, text)
            FROM anon;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        GRANT EXECUTE ON FUNCTION public.process_membership_transaction(uuid, integer, text, text, text)
            TO authenticated;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION public.process_membership_transaction(uuid, integer, text, text, text)
            TO service_role;
    END IF;
    RAISE NOTICE 'created public.process_membership_transaction (admins of the pass''s program only)';
END $$;

-- --- the old public helpers go; nothing of loyaltyd is callable or readable by default -------------

DROP FUNCTION IF EXISTS public.loyaltyd_check_program_timezone();
DROP FUNCTION IF EXISTS public.loyaltyd_fill_transaction_program();
DROP FUNCTION IF EXISTS public.loyaltyd_enqueue_pass_sync(uuid, uuid, text, integer, text, uuid);
DROP FUNCTION IF EXISTS public.loyaltyd_transactions_enqueue_sync();
DROP FUNCTION IF EXISTS public.loyaltyd_membership_enqueue_sync();
DROP FUNCTION IF EXISTS public.loyaltyd_ring_campaign_planner();
DROP FUNCTION IF EXISTS public.push_campaign_audience(uuid, text, integer, integer, integer, text[], text[]);
DROP FUNCTION IF EXISTS public.loyaltyd_transaction_result(public.transactions, public.passes_master, boolean);

DO $$
DECLARE
    r text;
BEGIN
    REVOKE ALL ON ALL TABLES IN SCHEMA loyaltyd FROM PUBLIC;
    REVOKE ALL ON ALL FUNCTIONS IN SCHEMA loyaltyd FROM PUBLIC;
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON SCHEMA loyaltyd FROM %I', r);
            EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA loyaltyd FROM %I', r);
            EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA loyaltyd FROM %I', r);
            EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA loyaltyd FROM %I', r);
        END IF;
    END LOOP;
END $$;
