-- The core tables loyaltyd created on an empty Supabase project are closed to the anon key.
-- A signed-in admin reads their own program's rows there; tables the user already had, or that
-- hold rows with row-level security off, keep their access and are named in a notice. On every
-- database, each program_id foreign key that lacked an index gets one.

-- unindexed_foreign_keys: deleting a program scans the rows that point at it. Left alone where
-- an index already leads with the column.
DO $$
DECLARE
    fk record;
BEGIN
    FOR fk IN
        SELECT * FROM (VALUES
            ('public.admin_profiles'::regclass, 'program_id'::name,
             'admin_profiles_program_id_idx'::name),
            ('public.birthday_logs', 'program_id', 'birthday_logs_program_id_idx'),
            ('public.notification_logs', 'program_id', 'notification_logs_program_id_idx')
        ) AS f(tbl, col, idx)
    LOOP
        IF NOT EXISTS (
            SELECT 1 FROM pg_catalog.pg_index i
              JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
             WHERE i.indrelid = fk.tbl AND a.attname = fk.col AND i.indisvalid
               AND i.indpred IS NULL) THEN
            EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s (%I)', fk.idx, fk.tbl, fk.col);
        END IF;
    END LOOP;
END $$;

-- Supabase's default privileges grant every table created in public to anon and authenticated,
-- with row-level security off: on an empty project, the core tables loyaltyd creates where they
-- are missing were readable and writable with the key every web page ships. Where loyaltyd can tell it created a
-- table here and nothing has been put in it or granted on it since, it closes the table. A
-- table of the user's, or one that already holds rows with row-level security off, may be open
-- on purpose (an app of theirs reading it): it is left exactly as it is, and said so.
--
-- The helpers live in pg_temp for this migration only.

-- Whether a migration of loyaltyd's created `tbl` on this database. Postgres records no creator,
-- but a catalog row keeps the transaction that wrote it (xmin, kept when frozen), and each
-- migration ran in one transaction with its row in loyaltyd.schema_migrations. The table's row
-- type is written by CREATE TABLE and left alone by ADD COLUMN, row-level security and grants,
-- so it shares its xmin with exactly one ledger row. A table the user created or re-created
-- does not, nor does any table of a database restored from a dump (whose ledger rows were all
-- written by one transaction).
CREATE FUNCTION pg_temp.created_by_loyaltyd(tbl regclass) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT count(*) = 1
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_type t ON t.oid = c.reltype
      JOIN loyaltyd.schema_migrations m ON m.xmin = t.xmin
     WHERE c.oid = tbl
       AND NOT EXISTS (SELECT 1 FROM loyaltyd.schema_migrations o
                        WHERE o.xmin = m.xmin AND o.version <> m.version)
$$;

-- Whether privileges on `tbl` are only what Supabase's defaults (and loyaltyd) grant: to its
-- owner, postgres, anon, authenticated and service_role, on the whole table. A grant to any
-- other role, to PUBLIC or on a column is the user's, and row-level security would lock it out.
CREATE FUNCTION pg_temp.granted_as_supabase_does(tbl regclass) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (
               SELECT 1 FROM pg_catalog.pg_class c,
                      pg_catalog.aclexplode(coalesce(c.relacl,
                                                     pg_catalog.acldefault('r', c.relowner))) g
                WHERE c.oid = tbl AND g.grantee <> c.relowner
                  AND pg_catalog.pg_get_userbyid(g.grantee)
                      NOT IN ('postgres', 'anon', 'authenticated', 'service_role'))
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                        WHERE attrelid = tbl AND attacl IS NOT NULL)
$$;

-- Whether `tbl` has a policy that is not loyaltyd's (all of loyaltyd's are named "loyaltyd: …").
CREATE FUNCTION pg_temp.has_their_policy(tbl regclass) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_policy
                    WHERE polrelid = tbl AND polname NOT LIKE 'loyaltyd:%')
$$;

CREATE FUNCTION pg_temp.holds_rows(tbl regclass) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    found boolean;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', tbl) INTO found;
    RETURN found;
END $$;

-- Who of the Data API's roles can reach `tbl` at all, e.g. 'anon, authenticated'.
CREATE FUNCTION pg_temp.reached_by(tbl regclass) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT string_agg(r, ', ' ORDER BY r)
      FROM unnest(ARRAY['anon', 'authenticated']) r
     WHERE pg_catalog.has_table_privilege(r, tbl, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')
$$;

DO $$
DECLARE
    -- The programs a signed-in admin administers, per admin_profiles; auth.uid() read once per
    -- statement (the advisor's auth_rls_initplan).
    mine constant text := '(SELECT a.program_id FROM public.admin_profiles a '
                          'WHERE a.id = (SELECT auth.uid()))';
    t record;
    p record;
    closed regclass[] := '{}';
    tightened regclass[] := '{}';
    left_open text[] := '{}';
BEGIN
    IF pg_catalog.to_regprocedure('auth.uid()') IS NULL
       OR pg_catalog.to_regrole('anon') IS NULL OR pg_catalog.to_regrole('authenticated') IS NULL
    THEN
        RAISE NOTICE 'auth.uid() not found: the core tables keep their privileges (plain Postgres: grant as you need)';
        RETURN;
    END IF;

    -- What a signed-in admin may do on each table, under the policies below: read (Softr, the
    -- console); change a program's settings (the console, which logs each change); record a
    -- redemption, check-in or message (Softr forms). Points move through
    -- process_membership_transaction, never by writing a balance or a ledger row's points.
    -- notification_logs and push_campaigns keep the policies they have (sql/051, sql/066).
    FOR t IN
        SELECT v.tbl, v.privileges, c.relrowsecurity AS rls, c.relforcerowsecurity AS forced
          FROM (VALUES
            ('public.programs'::regclass,
             'SELECT, UPDATE (birthday_bot_enabled, birthday_reward_points, birthday_message, '
             'timezone, max_pushes_per_pass_per_day)'),
            ('public.users', 'SELECT'),
            ('public.passes_master', 'SELECT'),
            ('public.protocol_membership', 'SELECT'),
            ('public.transactions', 'SELECT, INSERT'),
            ('public.admin_profiles', 'SELECT'),
            ('public.birthday_logs', 'SELECT'),
            ('public.notification_logs', 'SELECT'),
            ('public.push_campaigns', 'SELECT, INSERT, UPDATE, DELETE')
          ) AS v(tbl, privileges)
          JOIN pg_catalog.pg_class c ON c.oid = v.tbl
         ORDER BY c.relname
    LOOP
        -- FORCE (set by someone else) would hold back the daemon, the owner, once RLS is on.
        IF NOT pg_temp.created_by_loyaltyd(t.tbl) OR NOT pg_temp.granted_as_supabase_does(t.tbl)
           OR pg_temp.has_their_policy(t.tbl) OR t.forced
           OR (NOT t.rls AND pg_temp.holds_rows(t.tbl)) THEN
            IF NOT t.rls AND pg_temp.reached_by(t.tbl) IS NOT NULL THEN
                left_open := left_open || format('%s (%s)', t.tbl, pg_temp.reached_by(t.tbl));
            END IF;
            CONTINUE;
        END IF;
        -- Nothing for anon; for authenticated only the privileges above (no TRUNCATE, which
        -- row-level security does not stop, nor REFERENCES, TRIGGER or MAINTAIN). The daemon
        -- owns the tables, so row-level security (never FORCEd) does not apply to it.
        EXECUTE format('REVOKE ALL ON %s FROM anon, authenticated', t.tbl);
        EXECUTE format('GRANT %s ON %s TO authenticated', t.privileges, t.tbl);
        IF t.rls THEN
            tightened := tightened || t.tbl;
        ELSE
            EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t.tbl);
            closed := closed || t.tbl;
        END IF;
    END LOOP;

    -- A signed-in admin's rows: those of the programs admin_profiles gives them, and only their
    -- own admin_profiles row (which every other rule reads as them).
    FOR p IN
        SELECT * FROM (VALUES
            ('public.programs'::regclass, 'loyaltyd: admins read their programs',
             format('FOR SELECT TO authenticated USING (id IN %s)', mine)),
            ('public.programs', 'loyaltyd: admins change their programs'' settings',
             format('FOR UPDATE TO authenticated USING (id IN %s) WITH CHECK (id IN %s)',
                    mine, mine)),
            ('public.users', 'loyaltyd: admins read their programs'' members',
             format('FOR SELECT TO authenticated USING (id IN (SELECT p.user_id '
                    'FROM public.passes_master p WHERE p.program_id IN %s))', mine)),
            ('public.passes_master', 'loyaltyd: admins read their program''s passes',
             format('FOR SELECT TO authenticated USING (program_id IN %s)', mine)),
            ('public.protocol_membership', 'loyaltyd: admins read their program''s balances',
             format('FOR SELECT TO authenticated USING (pass_id IN (SELECT p.id '
                    'FROM public.passes_master p WHERE p.program_id IN %s))', mine)),
            ('public.transactions', 'loyaltyd: admins read their program''s transactions',
             format('FOR SELECT TO authenticated USING (program_id IN %s)', mine)),
            -- A pass of their program (program_id is filled in from the pass when omitted),
            -- and no points: a ledger row that moves points comes from the ledger function.
            ('public.transactions', 'loyaltyd: admins record events on their program''s passes',
             format('FOR INSERT TO authenticated WITH CHECK (program_id IN %s '
                    'AND coalesce(points_delta, 0) = 0 AND EXISTS (SELECT 1 '
                    'FROM public.passes_master p WHERE p.id = transactions.pass_id '
                    'AND p.program_id = transactions.program_id))', mine)),
            ('public.admin_profiles', 'loyaltyd: admins read their own profile',
             'FOR SELECT TO authenticated USING (id = (SELECT auth.uid()))'),
            ('public.birthday_logs', 'loyaltyd: admins read their program''s birthday gifts',
             format('FOR SELECT TO authenticated USING (program_id IN %s)', mine))
        ) AS v(tbl, name, rule)
         WHERE v.tbl = ANY (closed)
    LOOP
        EXECUTE format('CREATE POLICY %I ON %s AS PERMISSIVE %s', p.name, p.tbl, p.rule);
    END LOOP;

    IF cardinality(closed) > 0 THEN
        RAISE NOTICE '%: created here by loyaltyd, now with row-level security: nothing for anon, signed-in admins read their own program''s rows (admin_profiles)',
            array_to_string(closed, ', ');
    END IF;
    IF cardinality(tightened) > 0 THEN
        RAISE NOTICE '%: created here by loyaltyd: nothing for anon, and no TRUNCATE (which row-level security does not stop) for signed-in users',
            array_to_string(tightened, ', ');
    END IF;
    IF cardinality(left_open) > 0 THEN
        RAISE NOTICE '% %: row-level security is off, so the roles named reach every row (anon is the key every web page ships; authenticated, anyone signed in). loyaltyd left them as they are: it did not create them here, or they hold rows, grants or policies your app may rely on. Unless your app means anyone to read them, run for each: ALTER TABLE … ENABLE ROW LEVEL SECURITY; REVOKE ALL ON … FROM anon; then give signed-in admins their program''s rows with policies (docs/supabase.md)',
            CASE WHEN cardinality(left_open) = 1 THEN 'one table is open:' ELSE 'tables open:' END,
            array_to_string(left_open, ', ');
    END IF;
END $$;

DROP FUNCTION pg_temp.reached_by(regclass);
DROP FUNCTION pg_temp.holds_rows(regclass);
DROP FUNCTION pg_temp.has_their_policy(regclass);
DROP FUNCTION pg_temp.granted_as_supabase_does(regclass);
DROP FUNCTION pg_temp.created_by_loyaltyd(regclass);
