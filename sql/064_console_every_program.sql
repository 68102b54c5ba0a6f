-- A console person may hold a role in every program, present and future (the local admin of
-- `loyaltyd run` on its embedded default): a new program grants them that role at once.

ALTER TABLE loyaltyd.console_users ADD COLUMN IF NOT EXISTS every_program text;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conname = 'console_users_every_program_admin_or_viewer') THEN
        ALTER TABLE loyaltyd.console_users ADD CONSTRAINT console_users_every_program_admin_or_viewer
            CHECK (every_program IN ('admin', 'viewer'));
    END IF;
END $$;

-- Runs as loyaltyd's owner: whoever inserts the program (Softr, a signed-in admin) need not
-- reach loyaltyd's tables.
CREATE OR REPLACE FUNCTION loyaltyd.grant_every_program() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO loyaltyd.console_memberships (user_id, program_id, role)
    SELECT u.id, NEW.id, u.every_program
      FROM loyaltyd.console_users u
     WHERE u.every_program IS NOT NULL
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

REVOKE ALL ON FUNCTION loyaltyd.grant_every_program() FROM PUBLIC;

DROP TRIGGER IF EXISTS programs_grant_every_program ON public.programs;
CREATE TRIGGER programs_grant_every_program
    AFTER INSERT ON public.programs
    FOR EACH ROW EXECUTE FUNCTION loyaltyd.grant_every_program();
