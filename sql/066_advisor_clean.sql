-- Supabase's Performance and Security Advisor finds nothing of loyaltyd's: its policies read
-- auth.uid() once per statement and never stand beside a policy of the user's that already
-- allows the same, its foreign keys have an index, its tables a primary key.

-- unindexed_foreign_keys: without an index, deleting a transaction or a console user scans
-- the rows that point at it. Left alone where an index already leads with the column.
DO $$
DECLARE
    fk record;
BEGIN
    FOR fk IN
        SELECT * FROM (VALUES
            ('public.birthday_logs'::regclass, 'transaction_id'::name,
             'birthday_logs_transaction_id_idx'::name),        -- 005
            ('loyaltyd.console_invites'::regclass, 'user_id', 'console_invites_user')  -- 061
        ) AS f(tbl, col, idx)
    LOOP
        IF NOT EXISTS (
            SELECT 1 FROM pg_catalog.pg_index i
              JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
             WHERE i.indrelid = fk.tbl AND a.attname = fk.col AND i.indisvalid
               AND i.indpred IS NULL) THEN
            EXECUTE format('CREATE INDEX %I ON %s (%I)', fk.idx, fk.tbl, fk.col);
        END IF;
    END LOOP;
END $$;

-- no_primary_key: the webhook counts are one row per program and event, the program unknown
-- (NULL) for some, which a primary key cannot hold; their unique index stays the rule, and a
-- surrogate id is the key.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index
                    WHERE indrelid = 'loyaltyd.wallet_event_counts'::regclass AND indisprimary) THEN
        ALTER TABLE loyaltyd.wallet_event_counts
            ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
    END IF;
END $$;

-- The policies, on Supabase only (auth.uid()). auth_rls_initplan: a bare auth.uid() is called
-- for every row, `(SELECT auth.uid())` once per statement. multiple_permissive_policies: two
-- permissive policies for one role and command are both evaluated for every row, so loyaltyd
-- keeps none where a permissive policy of the user's already allows `authenticated` all that
-- loyaltyd's would. Every other policy of the user's is left exactly as it is, and a policy of
-- loyaltyd's that the user dropped is not brought back.
--
-- Rules are compared as Postgres prints them (pg_get_expr), so two spellings of one rule
-- compare equal, and auth.uid() read once or per row is printed alike. The helpers live in
-- pg_temp for this migration only.

CREATE FUNCTION pg_temp.printed(expr pg_catalog.pg_node_tree, tbl regclass) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT replace(pg_catalog.pg_get_expr(expr, tbl), '( SELECT auth.uid() AS uid)', 'auth.uid()')
$$;

-- A rule as printed, from a policy made and dropped for the purpose.
CREATE FUNCTION pg_temp.printed_rule(rule text, tbl regclass) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    printed text;
BEGIN
    EXECUTE format('CREATE POLICY "loyaltyd: printing" ON %s USING (%s)', tbl, rule);
    SELECT pg_temp.printed(polqual, polrelid) INTO printed FROM pg_catalog.pg_policy
     WHERE polrelid = tbl AND polname = 'loyaltyd: printing';
    EXECUTE format('DROP POLICY "loyaltyd: printing" ON %s', tbl);
    RETURN printed;
END $$;

-- The user's permissive policy that lets `authenticated` do all that `ours` does: for its
-- command or ALL, for authenticated or everyone, with the same rule (or, for `wider`, a rule
-- that ours only narrows). A missing WITH CHECK of an ALL or UPDATE policy is its USING.
CREATE FUNCTION pg_temp.covering(ours pg_catalog.pg_policy, wider text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT q.polname::text FROM pg_catalog.pg_policy q
     WHERE q.polrelid = ours.polrelid AND q.polname NOT LIKE 'loyaltyd:%' AND q.polpermissive
       AND q.polcmd IN (ours.polcmd, '*')
       AND q.polroles && ARRAY[0::oid, pg_catalog.to_regrole('authenticated')::oid]
       AND (ours.polqual IS NULL
            OR pg_temp.printed(q.polqual, q.polrelid)
               IN (pg_temp.printed(ours.polqual, ours.polrelid), wider))
       AND (ours.polwithcheck IS NULL
            OR pg_temp.printed(coalesce(q.polwithcheck, q.polqual), q.polrelid)
               = pg_temp.printed(ours.polwithcheck, ours.polrelid))
     ORDER BY q.polname
     LIMIT 1
$$;

-- loyaltyd's policy `policy` made again as `rule`, where loyaltyd has it, unless the user's
-- covers it.
CREATE FUNCTION pg_temp.renew(tbl regclass, policy text, rule text, wider text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    ours pg_catalog.pg_policy;
    theirs text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy WHERE polrelid = tbl AND polname = policy)
    THEN
        RAISE NOTICE '%: loyaltyd has no policy "%" here, and adds none', tbl, policy;
        RETURN;
    END IF;
    EXECUTE format('DROP POLICY %I ON %s', policy, tbl);
    EXECUTE format('CREATE POLICY %I ON %s AS PERMISSIVE %s', policy, tbl, rule);
    SELECT * INTO ours FROM pg_catalog.pg_policy WHERE polrelid = tbl AND polname = policy;
    theirs := pg_temp.covering(ours, wider);
    IF theirs IS NOT NULL THEN
        EXECUTE format('DROP POLICY %I ON %s', policy, tbl);
        RAISE NOTICE '%: your policy "%" already allows what loyaltyd''s "%" did; '
                     'loyaltyd keeps none beside it', tbl, theirs, policy;
    END IF;
END $$;

DO $$
DECLARE
    -- A signed-in admin's rows: those of the programs admin_profiles gives them.
    admins constant text := 'program_id IN (SELECT program_id FROM public.admin_profiles '
                            'WHERE id = (SELECT auth.uid()))';
    logs constant regclass := 'public.notification_logs';
    campaigns constant regclass := 'public.push_campaigns';
    logs_policy constant text := 'loyaltyd: admins read their program''s logs';
BEGIN
    IF pg_catalog.to_regprocedure('auth.uid()') IS NULL THEN
        RAISE NOTICE 'auth.uid() not found: no Supabase policies to renew';
        RETURN;
    END IF;

    -- 004 named its policy without "loyaltyd:" and created it where no policy had that name,
    -- so a policy of that name is 004's only if it is exactly what 004 created: for SELECT,
    -- for everyone, with its rule. That one takes loyaltyd's name; any other is the user's.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_policy p
                WHERE p.polrelid = logs AND p.polname = 'admins view their program''s logs'
                  AND p.polpermissive AND p.polcmd = 'r' AND p.polroles = '{0}'
                  AND p.polwithcheck IS NULL
                  AND pg_temp.printed(p.polqual, logs) = pg_temp.printed_rule(admins, logs))
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy
                        WHERE polrelid = logs AND polname = logs_policy) THEN
        EXECUTE format('ALTER POLICY "admins view their program''s logs" ON %s RENAME TO %I',
                       logs, logs_policy);
    END IF;
    -- For authenticated only: anon's auth.uid() is NULL, so it never matched a row anyway.
    PERFORM pg_temp.renew(logs, logs_policy,
        format('FOR SELECT TO authenticated USING (%s)', admins));

    PERFORM pg_temp.renew(campaigns, 'loyaltyd: admins read their program''s campaigns',
        format('FOR SELECT TO authenticated USING (%s)', admins));
    PERFORM pg_temp.renew(campaigns, 'loyaltyd: admins add campaigns to their program',
        format('FOR INSERT TO authenticated WITH CHECK (%s)', admins));
    PERFORM pg_temp.renew(campaigns, 'loyaltyd: admins edit their program''s campaigns',
        format('FOR UPDATE TO authenticated USING (%s) WITH CHECK (%s)', admins, admins));
    -- A user's rule for all of their program's campaigns allows the unsent ones too.
    PERFORM pg_temp.renew(campaigns, 'loyaltyd: admins delete unsent campaigns',
        format('FOR DELETE TO authenticated USING (started_at IS NULL AND %s)', admins),
        wider => pg_temp.printed_rule(admins, campaigns));
END $$;

DROP FUNCTION pg_temp.renew(regclass, text, text, text);
DROP FUNCTION pg_temp.covering(pg_catalog.pg_policy, text);
DROP FUNCTION pg_temp.printed_rule(text, regclass);
DROP FUNCTION pg_temp.printed(pg_catalog.pg_node_tree, regclass);
