-- The console's accounts can be disabled, sign-in attempts are counted atomically, who-columns
-- cannot be forged on INSERT, settings changes log themselves, and what expires is purged by
-- index.

-- A revoked person: no password, no operator role, no session (console_session checks it).
ALTER TABLE loyaltyd.console_users ADD COLUMN IF NOT EXISTS disabled_at timestamptz;

-- Sign-in attempts (every one, not only failures) per account ('email:…') and per address
-- ('address:…'), in a window that starts at a key's first attempt. One row per key, counted by
-- an upsert before the password is checked: parallel attempts queue on the row, so each one
-- sees every attempt before it. Replaces console_signin_failures (counted after the check).
CREATE TABLE IF NOT EXISTS loyaltyd.console_signin_attempts (
    key text PRIMARY KEY,
    window_start timestamptz NOT NULL,
    attempts integer NOT NULL
);
CREATE INDEX IF NOT EXISTS console_signin_attempts_window
    ON loyaltyd.console_signin_attempts (window_start);
DROP TABLE IF EXISTS loyaltyd.console_signin_failures;

-- Who confirmed or cancelled a campaign is said by the update that does it (sql/061's
-- push_campaign_keep_who keeps it): an INSERT cannot pre-set it. created_by stays the
-- inserter's to say (the console's "console: …", the HTTP API's "api key …").
CREATE OR REPLACE FUNCTION loyaltyd.push_campaign_who_on_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    NEW.confirmed_by := NULL;
    NEW.confirmed_at := NULL;
    NEW.cancelled_by := NULL;
    NEW.cancelled_at := NULL;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS push_campaigns_who_on_insert ON public.push_campaigns;
CREATE TRIGGER push_campaigns_who_on_insert
    BEFORE INSERT ON public.push_campaigns
    FOR EACH ROW EXECUTE FUNCTION loyaltyd.push_campaign_who_on_insert();

-- Every change to a program's settings is logged by the statement that makes it, so a change
-- is never without its entry: who is what the writer said for this transaction
-- (loyaltyd.changed_by: the console's "console: …"), else the database role that wrote it.
-- Runs as loyaltyd's owner: a writer (a Supabase admin as `authenticated`) need not reach the
-- log itself.
CREATE OR REPLACE FUNCTION loyaltyd.log_program_settings() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    who text := coalesce(nullif(current_setting('loyaltyd.changed_by', true), ''),
                         'database: ' || session_user);
BEGIN
    INSERT INTO loyaltyd.program_setting_changes
           (program_id, changed_by, setting, old_value, new_value)
    SELECT NEW.id, who, c.setting, c.old_value, c.new_value
      FROM (VALUES
            ('birthday_bot_enabled', OLD.birthday_bot_enabled::text, NEW.birthday_bot_enabled::text),
            ('birthday_reward_points', OLD.birthday_reward_points::text,
             NEW.birthday_reward_points::text),
            -- no message and an empty one are the same setting
            ('birthday_message', nullif(OLD.birthday_message, ''), nullif(NEW.birthday_message, '')),
            ('timezone', OLD.timezone, NEW.timezone),
            ('max_pushes_per_pass_per_day', OLD.max_pushes_per_pass_per_day::text,
             NEW.max_pushes_per_pass_per_day::text)
           ) AS c (setting, old_value, new_value)
     WHERE c.old_value IS DISTINCT FROM c.new_value;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS programs_log_settings ON public.programs;
CREATE TRIGGER programs_log_settings
    AFTER UPDATE OF birthday_bot_enabled, birthday_reward_points, birthday_message, timezone,
                    max_pushes_per_pass_per_day ON public.programs
    FOR EACH ROW EXECUTE FUNCTION loyaltyd.log_program_settings();

-- Sessions and invitations a day past their expiry are purged as new sessions start
-- (console_session_create), by these.
CREATE INDEX IF NOT EXISTS console_sessions_expires ON loyaltyd.console_sessions (expires_at);
CREATE INDEX IF NOT EXISTS console_invites_expires ON loyaltyd.console_invites (expires_at);

-- Like every console object (sql/061): nothing for PUBLIC nor the Data API's roles.
DO $$
DECLARE
    r text;
BEGIN
    REVOKE ALL ON loyaltyd.console_signin_attempts FROM PUBLIC;
    REVOKE ALL ON FUNCTION loyaltyd.push_campaign_who_on_insert() FROM PUBLIC;
    REVOKE ALL ON FUNCTION loyaltyd.log_program_settings() FROM PUBLIC;
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON loyaltyd.console_signin_attempts FROM %I', r);
            EXECUTE format(
                'REVOKE ALL ON FUNCTION loyaltyd.push_campaign_who_on_insert() FROM %I', r);
            EXECUTE format('REVOKE ALL ON FUNCTION loyaltyd.log_program_settings() FROM %I', r);
        END IF;
    END LOOP;
END $$;
