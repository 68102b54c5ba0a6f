-- The admins' console (/console/): its people, their programs and roles, one-time invitations,
-- sessions, sign-in failures (rate limits), and who did what to a campaign or a program.

CREATE TABLE IF NOT EXISTS loyaltyd.console_users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL,
    password_hash text,
    operator boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    password_set_at timestamptz,
    CONSTRAINT console_users_email_is_lower_case CHECK (email = lower(email))
);
CREATE UNIQUE INDEX IF NOT EXISTS console_users_email ON loyaltyd.console_users (email);

-- A person's programs: `admin` composes, sends and cancels; `viewer` reads.
CREATE TABLE IF NOT EXISTS loyaltyd.console_memberships (
    user_id uuid NOT NULL REFERENCES loyaltyd.console_users (id) ON DELETE CASCADE,
    program_id uuid NOT NULL REFERENCES public.programs (id) ON DELETE CASCADE,
    role text NOT NULL,
    PRIMARY KEY (user_id, program_id),
    CONSTRAINT console_memberships_role_admin_or_viewer CHECK (role IN ('admin', 'viewer'))
);
CREATE INDEX IF NOT EXISTS console_memberships_program
    ON loyaltyd.console_memberships (program_id);

-- A one-time sign-in link: only the hash of its token is kept; used once, within 24 h.
CREATE TABLE IF NOT EXISTS loyaltyd.console_invites (
    token_hash text PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES loyaltyd.console_users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);

-- A signed-in browser: the cookie carries the id (signed); only its hash is kept. A Supabase
-- session keeps the access token's claims, under which its reads and writes run.
CREATE TABLE IF NOT EXISTS loyaltyd.console_sessions (
    id_hash text PRIMARY KEY,
    user_id uuid REFERENCES loyaltyd.console_users (id) ON DELETE CASCADE,
    supabase_claims jsonb,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    CONSTRAINT console_sessions_one_identity
        CHECK ((user_id IS NULL) <> (supabase_claims IS NULL))
);
CREATE INDEX IF NOT EXISTS console_sessions_user ON loyaltyd.console_sessions (user_id);

-- Failed sign-ins, counted per account and per address over a window (every daemon sees the
-- same); old rows are removed as new ones come.
CREATE TABLE IF NOT EXISTS loyaltyd.console_signin_failures (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL,
    address text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS console_signin_failures_email ON loyaltyd.console_signin_failures (email, at);
CREATE INDEX IF NOT EXISTS console_signin_failures_address
    ON loyaltyd.console_signin_failures (address, at);

-- Every change to a program's settings made in the console: who, when, what, from and to.
CREATE TABLE IF NOT EXISTS loyaltyd.program_setting_changes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id uuid NOT NULL REFERENCES public.programs (id) ON DELETE CASCADE,
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    setting text NOT NULL,
    old_value text,
    new_value text
);
CREATE INDEX IF NOT EXISTS program_setting_changes_program
    ON loyaltyd.program_setting_changes (program_id, changed_at DESC);

-- Who created, confirmed (sent) and cancelled a campaign: a console user's email, "api key
-- …" for the HTTP API. Set once: a form write-back of what it loaded changes nothing, and a
-- value already set stays.
ALTER TABLE public.push_campaigns
    ADD COLUMN IF NOT EXISTS created_by text,
    ADD COLUMN IF NOT EXISTS confirmed_by text,
    ADD COLUMN IF NOT EXISTS confirmed_at timestamptz,
    ADD COLUMN IF NOT EXISTS cancelled_by text,
    ADD COLUMN IF NOT EXISTS cancelled_at timestamptz;

CREATE OR REPLACE FUNCTION loyaltyd.push_campaign_keep_who() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    NEW.created_by := coalesce(OLD.created_by, NEW.created_by);
    NEW.confirmed_by := coalesce(OLD.confirmed_by, NEW.confirmed_by);
    NEW.confirmed_at := coalesce(OLD.confirmed_at, NEW.confirmed_at);
    NEW.cancelled_by := coalesce(OLD.cancelled_by, NEW.cancelled_by);
    NEW.cancelled_at := coalesce(OLD.cancelled_at, NEW.cancelled_at);
    -- When: the moment the status moved, whoever wrote it.
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        IF NEW.status = 'PENDING' AND OLD.status = 'DRAFT' AND NEW.confirmed_at IS NULL THEN
            NEW.confirmed_at := pg_catalog.now();
        ELSIF NEW.status = 'CANCELLED' AND NEW.cancelled_at IS NULL THEN
            NEW.cancelled_at := pg_catalog.now();
        END IF;
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS push_campaigns_keep_who ON public.push_campaigns;
CREATE TRIGGER push_campaigns_keep_who
    BEFORE UPDATE ON public.push_campaigns
    FOR EACH ROW EXECUTE FUNCTION loyaltyd.push_campaign_keep_who();

DO $$
DECLARE
    t text;
    r text;
BEGIN
    FOREACH t IN ARRAY ARRAY['loyaltyd.console_users', 'loyaltyd.console_memberships',
                             'loyaltyd.console_invites', 'loyaltyd.console_sessions',
                             'loyaltyd.console_signin_failures',
                             'loyaltyd.program_setting_changes'] LOOP
        EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', t);
        FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
                EXECUTE format('REVOKE ALL ON %s FROM %I', t, r);
            END IF;
        END LOOP;
    END LOOP;
    REVOKE ALL ON FUNCTION loyaltyd.push_campaign_keep_who() FROM PUBLIC;
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION loyaltyd.push_campaign_keep_who() FROM %I', r);
        END IF;
    END LOOP;
END $$;
