-- Passes per program and status, kept by the statements that change them, so `loyaltyd
-- status`, /metrics and the console read a few rows instead of counting every pass (a count
-- of 5,000,000 passes took a second).
CREATE TABLE IF NOT EXISTS loyaltyd.pass_status_counts (
    program_id uuid NOT NULL,
    status text NOT NULL,  -- passes_master.status, 'NULL' for none
    passes bigint NOT NULL,
    PRIMARY KEY (program_id, status)
);
COMMENT ON TABLE loyaltyd.pass_status_counts IS
    'Passes per program and passes_master.status (''NULL'' for none), kept by triggers on passes_master.';

-- One statement's change, from its transition tables: one upsert per (program, status) it
-- touched, in key order (two writers lock the same rows in the same order). Runs as loyaltyd's
-- owner: a writer of passes (Softr, an import) needs no privilege on the counts.
CREATE OR REPLACE FUNCTION loyaltyd.count_pass_statuses() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO loyaltyd.pass_status_counts AS c (program_id, status, passes)
        SELECT program_id, coalesce(status, 'NULL'), count(*) FROM new_passes
         WHERE program_id IS NOT NULL
         GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (program_id, status) DO UPDATE SET passes = c.passes + excluded.passes;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO loyaltyd.pass_status_counts AS c (program_id, status, passes)
        SELECT program_id, coalesce(status, 'NULL'), -count(*) FROM old_passes
         WHERE program_id IS NOT NULL
         GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (program_id, status) DO UPDATE SET passes = c.passes + excluded.passes;
    ELSE
        INSERT INTO loyaltyd.pass_status_counts AS c (program_id, status, passes)
        SELECT program_id, status, sum(n) FROM (
                SELECT program_id, coalesce(status, 'NULL') AS status, 1 AS n FROM new_passes
                UNION ALL
                SELECT program_id, coalesce(status, 'NULL'), -1 FROM old_passes) d
         WHERE program_id IS NOT NULL
         GROUP BY 1, 2 HAVING sum(n) <> 0 ORDER BY 1, 2
        ON CONFLICT (program_id, status) DO UPDATE SET passes = c.passes + excluded.passes;
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS passes_master_count_inserts ON public.passes_master;
CREATE TRIGGER passes_master_count_inserts
    AFTER INSERT ON public.passes_master REFERENCING NEW TABLE AS new_passes
    FOR EACH STATEMENT EXECUTE FUNCTION loyaltyd.count_pass_statuses();
DROP TRIGGER IF EXISTS passes_master_count_updates ON public.passes_master;
CREATE TRIGGER passes_master_count_updates
    AFTER UPDATE ON public.passes_master
    REFERENCING OLD TABLE AS old_passes NEW TABLE AS new_passes
    FOR EACH STATEMENT EXECUTE FUNCTION loyaltyd.count_pass_statuses();
DROP TRIGGER IF EXISTS passes_master_count_deletes ON public.passes_master;
CREATE TRIGGER passes_master_count_deletes
    AFTER DELETE ON public.passes_master REFERENCING OLD TABLE AS old_passes
    FOR EACH STATEMENT EXECUTE FUNCTION loyaltyd.count_pass_statuses();

-- A TRUNCATE empties the counts with the passes.
CREATE OR REPLACE FUNCTION loyaltyd.clear_pass_status_counts() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM loyaltyd.pass_status_counts;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS passes_master_count_truncate ON public.passes_master;
CREATE TRIGGER passes_master_count_truncate
    AFTER TRUNCATE ON public.passes_master
    FOR EACH STATEMENT EXECUTE FUNCTION loyaltyd.clear_pass_status_counts();

-- The passes already there, counted once (the table is locked against writers meanwhile, so
-- no change slips between the count and the triggers).
LOCK TABLE public.passes_master IN SHARE MODE;
DELETE FROM loyaltyd.pass_status_counts;
INSERT INTO loyaltyd.pass_status_counts (program_id, status, passes)
SELECT program_id, coalesce(status, 'NULL'), count(*) FROM public.passes_master
 WHERE program_id IS NOT NULL
 GROUP BY 1, 2;

DO $$
DECLARE
    r text;
BEGIN
    REVOKE ALL ON loyaltyd.pass_status_counts FROM PUBLIC;
    REVOKE ALL ON FUNCTION loyaltyd.count_pass_statuses() FROM PUBLIC;
    REVOKE ALL ON FUNCTION loyaltyd.clear_pass_status_counts() FROM PUBLIC;
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON loyaltyd.pass_status_counts FROM %I', r);
            EXECUTE format('REVOKE ALL ON FUNCTION loyaltyd.count_pass_statuses() FROM %I', r);
            EXECUTE format('REVOKE ALL ON FUNCTION loyaltyd.clear_pass_status_counts() FROM %I',
                           r);
        END IF;
    END LOOP;
END $$;
