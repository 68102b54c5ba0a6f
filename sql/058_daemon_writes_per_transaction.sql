-- The daemon is recognised per transaction, not by its connection's application_name.
--
-- 052 let through every writer whose application_name started with 'loyaltyd'. Behind a
-- session pooler (Supabase's port 5432, PgBouncer pool_mode = session) that name is lost: the
-- daemon's pool runs RESET ALL when a connection goes back to it, which resets application_name
-- to whatever the pooler's server connection started with, so from the second use of a pooled
-- connection on the daemon's own status changes were refused by its own rules.
--
-- Now each daemon statement that writes push_campaigns' daemon-owned columns calls
-- loyaltyd.writing_as_daemon() in its WHERE clause (every row it updates has passed that
-- clause, so the mark is set before the row's trigger runs). The mark is a transaction-local
-- setting holding the transaction's own id: it ends with the transaction, no pooler, RESET ALL
-- or DISCARD ALL can carry it to another one, and a session-level SET of it matches nothing.
--
-- Guarded against: form write-backs (Softr), Data API callers (anon, authenticated,
-- service_role, behind the `authenticator` login), loyaltyd's own HTTP API and console (they
-- never mark a write), and any other role, even one that sets the setting by hand: the mark
-- counts only in a session of loyaltyd's owning role or a member of it. Not guarded against: a
-- SQL user connected as that role who sets the mark on purpose; that user can alter the rules
-- anyway.

CREATE OR REPLACE FUNCTION loyaltyd.writing_as_daemon() RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = '' AS $$
    SELECT pg_catalog.set_config('loyaltyd.writer', pg_catalog.pg_current_xact_id()::text, true)
           IS NOT NULL
$$;
COMMENT ON FUNCTION loyaltyd.writing_as_daemon() IS
    'Marks the current transaction as loyaltyd''s own: push_campaigns'' rules let it through.';

-- The mark counts only from a session of the role that owns loyaltyd (the role `loyaltyd
-- migrate` and the daemon connect as) or a member of it: a Data API caller, a console user or
-- any other role that sets the setting by hand is still a stranger.
CREATE OR REPLACE FUNCTION loyaltyd.written_by_loyaltyd() RETURNS boolean
LANGUAGE sql STABLE SET search_path = '' AS $$
    SELECT coalesce(pg_catalog.current_setting('loyaltyd.writer', true)
                    = pg_catalog.pg_current_xact_id()::text, false)
       AND pg_catalog.pg_has_role(
               session_user,
               (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.nspname = 'loyaltyd'),
               'MEMBER')
$$;

REVOKE ALL ON FUNCTION loyaltyd.writing_as_daemon() FROM PUBLIC;
REVOKE ALL ON FUNCTION loyaltyd.written_by_loyaltyd() FROM PUBLIC;
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION loyaltyd.writing_as_daemon() FROM %I', r);
            EXECUTE format('REVOKE ALL ON FUNCTION loyaltyd.written_by_loyaltyd() FROM %I', r);
        END IF;
    END LOOP;
END $$;
